package base

import (
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Compression is how a backup's files are stored: "none", "lz4" or "zstd".
type Compression string

// The compressions a backup can use.
const (
	None Compression = "none"
	LZ4  Compression = "lz4"
	Zstd Compression = "zstd"
)

// ParseCompression returns the Compression named s.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case None, LZ4, Zstd:
		return c, nil
	}
	return "", fmt.Errorf("base: compression %q is not one of none, lz4, zstd", s)
}

// ext is what the name of a stored file ends with.
func (c Compression) ext() string {
	switch c {
	case LZ4:
		return ".lz4"
	case Zstd:
		return ".zst"
	}
	return ""
}

// encoder compresses one file after another; each worker has its own,
// so that the encoders' buffers are allocated once.
type encoder struct {
	c    Compression
	lz   []*lz4.Writer // one per lz4Blocks entry
	zstd *zstd.Encoder
	head []byte       // a file's first bytes: all of a small one
	out  bytes.Buffer // a small file, compressed
}

func newEncoder(c Compression) (*encoder, error) {
	e := &encoder{c: c}
	switch c {
	case LZ4:
		for _, size := range lz4Blocks {
			w := lz4.NewWriter(nil)
			if err := w.Apply(lz4.ConcurrencyOption(1), lz4.CompressionLevelOption(lz4.Fast), lz4.BlockChecksumOption(false), lz4.BlockSizeOption(size)); err != nil {
				return nil, fmt.Errorf("base: lz4: %w", err)
			}
			e.lz = append(e.lz, w)
		}
	case Zstd:
		z, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("base: zstd: %w", err)
		}
		e.zstd = z
	}
	return e, nil
}

// lz4Blocks are the block sizes a file can be stored with, smallest
// first: a file known to be small gets the smallest block that holds all
// of it, a streamed one the largest. lz4 takes a buffer of the block's
// size from a pool for every file, when it compresses and when it
// decompresses (the size is in the frame's header): nearly free in a
// normal build, but a race-detector build scans the whole buffer each
// time, and with 4 MiB blocks for 8 KiB files the backups and restores of
// the -race tests took a minute for an empty cluster. Larger blocks
// compress a large file faster.
var lz4Blocks = []lz4.BlockSize{lz4.Block64Kb, lz4.Block256Kb, lz4.Block1Mb, lz4.Block4Mb}

// wrap returns a writer that compresses into w the size bytes that follow
// (-1: unknown); closing it flushes the compressed stream's end but does
// not close w.
func (e *encoder) wrap(w io.Writer, size int64) io.WriteCloser {
	switch e.c {
	case LZ4:
		i := 0
		for i < len(lz4Blocks)-1 && (size < 0 || size > int64(lz4Blocks[i])) {
			i++
		}
		e.lz[i].Reset(w)
		return e.lz[i]
	case Zstd:
		e.zstd.Reset(w)
		return e.zstd
	}
	return nopCloser{w}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// decoder is encoder's reverse.
type decoder struct {
	c    Compression
	lz   *lz4.Reader
	zstd *zstd.Decoder
}

func newDecoder(c Compression) (*decoder, error) {
	d := &decoder{c: c}
	switch c {
	case LZ4:
		d.lz = lz4.NewReader(nil)
	case Zstd:
		z, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("base: zstd: %w", err)
		}
		d.zstd = z
	case None:
	default:
		return nil, fmt.Errorf("base: compression %q is not one of none, lz4, zstd", c)
	}
	return d, nil
}

// wrap returns a reader of r's decompressed bytes.
func (d *decoder) wrap(r io.Reader) (io.Reader, error) {
	switch d.c {
	case LZ4:
		d.lz.Reset(r)
		return d.lz, nil
	case Zstd:
		if err := d.zstd.Reset(r); err != nil {
			return nil, err
		}
		return d.zstd, nil
	}
	return r, nil
}

func (d *decoder) close() {
	if d.zstd != nil {
		d.zstd.Close()
	}
}
