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
	lz   *lz4.Writer
	zstd *zstd.Encoder
	head []byte       // a file's first bytes: all of a small one
	out  bytes.Buffer // a small file, compressed
}

func newEncoder(c Compression) (*encoder, error) {
	e := &encoder{c: c}
	switch c {
	case LZ4:
		e.lz = lz4.NewWriter(nil)
		if err := e.lz.Apply(lz4.ConcurrencyOption(1), lz4.CompressionLevelOption(lz4.Fast), lz4.BlockChecksumOption(false)); err != nil {
			return nil, fmt.Errorf("base: lz4: %w", err)
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

// wrap returns a writer that compresses into w; closing it flushes the
// compressed stream's end but does not close w.
func (e *encoder) wrap(w io.Writer) io.WriteCloser {
	switch e.c {
	case LZ4:
		e.lz.Reset(w)
		return e.lz
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
