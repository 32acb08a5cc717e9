package repo

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// Encryption of a repository's objects.
//
// Every object is sealed on its own, in the STREAM construction that age
// and Tink's streaming AEAD use (Hoang, Reyhanitabar, Rogaway and Vizár,
// "Online authenticated-encryption and its nonce-reuse misuse-resistance",
// 2015), with AES-256-GCM:
//
//	header   "haven-e1" (8 bytes), then a random salt (32 bytes)
//	chunks   64 KiB of plaintext each, the last one shorter (or empty, for
//	         an empty object), each sealed with a 16-byte tag
//
// The object's key is HKDF-SHA256 of the repository's key, with the salt,
// and the object's name in the info: a fresh key for each object (so a
// chunk's nonce can be its number) that decrypts the object under its own
// name only, so that one object cannot be passed off as another. A chunk's
// 12-byte nonce is its number (11 bytes, big-endian) and a byte that is 1
// for the last chunk and 0 for the others: a reader detects a changed,
// reordered, dropped or added chunk, and an object cut short, even at a
// chunk's boundary. A reader holds one chunk in memory, a writer one too.
//
// Object names stay plain: the archiver and the restore find WAL and
// backups by their names (LSNs, labels). Sizes that Stat and List report
// are of the plaintext, computed from the stored size, so that callers
// compare sizes as they do in an unencrypted repository.
const (
	encMagic    = "haven-e1"
	encSaltSize = 32
	encHeader   = len(encMagic) + encSaltSize
	encChunk    = 64 << 10
	encTag      = 16
	encInfo     = "haven backup object v1\x00"
)

// KeyCheckName is the object at the root of an encrypted repository that
// tells whether a key is the repository's: a known text, sealed under its
// key when encryption is first used there. It is not listed, and no other
// object may take its name.
const KeyCheckName = "encryption.check"

const keyCheckText = "haven backup repository key check v1\n"

// KeySize is the length of a repository's key: 32 bytes, AES-256.
const KeySize = 32

// ReadKeyFile reads a repository's key from file: 32 bytes in base64 (44
// characters; spaces and line ends around them are ignored), as
// `head -c 32 /dev/urandom | base64` writes them.
func ReadKeyFile(file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("repo: database.backup.encryption_key_file: %w", err)
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("repo: database.backup.encryption_key_file: %s %w", file, err)
	}
	return key, nil
}

// ParseKey decodes a key file's contents: 32 bytes in base64. Its error
// says what the file must hold.
func ParseKey(data []byte) ([]byte, error) {
	text := strings.TrimSpace(string(data))
	key, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("does not hold a key: it must hold %d random bytes in base64 (%d characters), such as `head -c %d /dev/urandom | base64` writes", KeySize, base64.StdEncoding.EncodedLen(KeySize), KeySize)
	}
	return key, nil
}

// Encrypted returns r with every object's contents encrypted under key
// (KeySize bytes), which must be the key r's objects were written with.
// It sends no request: the first operation reads r's key check (and, in
// an empty repository, the first write stores it), and fails, before
// anything is written, when key is not r's, or when r holds objects that
// were written without encryption. A damaged object fails its read,
// naming the object.
func Encrypted(r Repository, key []byte) (Repository, error) {
	return newEncrypted(r, key, "")
}

// newEncrypted is Encrypted, with where the key came from for messages.
func newEncrypted(r Repository, key []byte, from string) (*encrypted, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("repo: %s: the encryption key has %d bytes; AES-256 needs %d", r, len(key), KeySize)
	}
	if from == "" {
		from = "the encryption key"
	}
	return &encrypted{r: r, key: bytes.Clone(key), from: from}, nil
}

type encrypted struct {
	r    Repository
	key  []byte
	from string // "database.backup.encryption_key_file (PATH)"

	mu    sync.Mutex
	ok    bool  // the key check passed
	wrong error // the key is not the repository's, for good
}

func (e *encrypted) String() string { return e.r.String() }

// ready checks, once, that e's key is the repository's. With write, an
// empty repository gets its key check stored first; without, an empty
// repository is fine to read (there is nothing to decrypt) and is looked
// at again next time.
func (e *encrypted) ready(ctx context.Context, write bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ok {
		return nil
	}
	if e.wrong != nil {
		return e.wrong
	}
	err := e.checkKey(ctx)
	if !IsNotExist(err) {
		return err
	}
	var first string
	stop := errors.New("stop")
	err = e.r.List(ctx, "", func(i Info) error { first = i.Name; return stop })
	switch {
	case err != nil && err != stop:
		return err
	case first == KeyCheckName:
		// Another process stored it since: read it.
		return e.checkKey(ctx)
	case first != "":
		e.wrong = fmt.Errorf("%s: repository %s holds objects written without encryption (such as %s) and no %s: remove encryption_key_file to use its backups, or give an empty repository for encrypted ones", e.from, e, first, KeyCheckName)
		return e.wrong
	case !write:
		return nil
	}
	body := strings.NewReader(keyCheckText)
	if err := e.r.Put(ctx, KeyCheckName, e.seal(KeyCheckName, body, body.Size()), sealedSize(body.Size())); err != nil {
		return err
	}
	// Read it back: of two writers with two keys that began at once, the
	// one whose check was replaced before it read it learns it here. (Two
	// that each store and read back theirs before the other stores are
	// not told apart, as repo.Claim cannot tell two claims at once.)
	return e.checkKey(ctx)
}

// checkKey reads the key check and decrypts it; it wraps ErrNotExist when
// there is none. e.mu is held.
func (e *encrypted) checkKey(ctx context.Context) error {
	rc, err := e.r.Get(ctx, KeyCheckName)
	if err != nil {
		return err
	}
	o := e.open(KeyCheckName, rc)
	defer o.Close()
	got, err := io.ReadAll(io.LimitReader(o, int64(len(keyCheckText))+1))
	var bad *damagedError
	switch {
	case errors.As(err, &bad) || err == nil && string(got) != keyCheckText:
		e.wrong = fmt.Errorf("%s: the key does not decrypt repository %s (it was encrypted with another key): give the key its backups were written with", e.from, e)
		return e.wrong
	case err != nil:
		return err
	}
	e.ok = true
	return nil
}

// reserved refuses the key check's name to the callers.
func (e *encrypted) reserved(op, name string) error {
	if name == KeyCheckName {
		return fmt.Errorf("repo: %s: %s %s: the name of the repository's key check, which no object may take", e, op, name)
	}
	return nil
}

func (e *encrypted) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("repo: %s: %w", e, err)
	}
	if err := e.reserved("put", name); err != nil {
		return err
	}
	if err := e.ready(ctx, true); err != nil {
		return err
	}
	return e.r.Put(ctx, name, e.seal(name, r, size), sealedSize(size))
}

// Create seals b and creates the object in the repository underneath
// only if no object has the name (Creator). Underneath a repository that
// is not a Creator, it is Put: the name is taken whether or not it was.
func (e *encrypted) Create(ctx context.Context, name string, b []byte) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("repo: %s: %w", e, err)
	}
	if err := e.reserved("create", name); err != nil {
		return err
	}
	if err := e.ready(ctx, true); err != nil {
		return err
	}
	c, ok := e.r.(Creator)
	if !ok {
		return e.Put(ctx, name, bytes.NewReader(b), int64(len(b)))
	}
	sealed, err := io.ReadAll(e.seal(name, bytes.NewReader(b), int64(len(b))))
	if err != nil {
		return fmt.Errorf("repo: %s: create %s: %w", e, name, err)
	}
	return c.Create(ctx, name, sealed)
}

func (e *encrypted) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := e.reserved("get", name); err != nil {
		return nil, err
	}
	if err := e.ready(ctx, false); err != nil {
		return nil, err
	}
	rc, err := e.r.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	o := e.open(name, rc)
	// Read the header now: an object that is not encrypted, or a key
	// that cannot be derived, fails here rather than at the first Read.
	if err := o.start(); err != nil {
		rc.Close()
		return nil, err
	}
	return o, nil
}

func (e *encrypted) Stat(ctx context.Context, name string) (Info, error) {
	if err := e.reserved("stat", name); err != nil {
		return Info{}, err
	}
	if err := e.ready(ctx, false); err != nil {
		return Info{}, err
	}
	i, err := e.r.Stat(ctx, name)
	i.Size = openedSize(i.Size)
	return i, err
}

func (e *encrypted) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := e.ready(ctx, false); err != nil {
		return err
	}
	return e.r.List(ctx, prefix, func(i Info) error {
		if i.Name == KeyCheckName {
			return nil
		}
		i.Size = openedSize(i.Size)
		return fn(i)
	})
}

func (e *encrypted) Delete(ctx context.Context, names ...string) error {
	for _, name := range names {
		if err := e.reserved("delete", name); err != nil {
			return err
		}
	}
	if err := e.ready(ctx, false); err != nil {
		return err
	}
	return e.r.Delete(ctx, names...)
}

// sealedSize is the stored size of an object of size bytes (-1: unknown).
func sealedSize(size int64) int64 {
	if size < 0 {
		return -1
	}
	chunks := max((size+encChunk-1)/encChunk, 1)
	return int64(encHeader) + size + chunks*encTag
}

// openedSize is the plaintext size of a stored object of size bytes; for
// a size no object seals to (a damaged object, whose read fails), the
// plaintext its whole chunks would hold.
func openedSize(size int64) int64 {
	if size <= 0 {
		return size
	}
	size -= int64(encHeader)
	full, rest := size/(encChunk+encTag), size%(encChunk+encTag)
	if size < encTag || rest > 0 && rest < encTag {
		return max(full*encChunk, 0)
	}
	if rest == 0 {
		return full * encChunk
	}
	return full*encChunk + rest - encTag
}

// objectAEAD returns the AEAD of object name whose header has salt.
func (e *encrypted) objectAEAD(name string, salt []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, e.key, salt, encInfo+name, KeySize)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func chunkNonce(nonce *[12]byte, n uint64, last bool) []byte {
	binary.BigEndian.PutUint64(nonce[3:11], n)
	nonce[11] = 0
	if last {
		nonce[11] = 1
	}
	return nonce[:]
}

// chunkBuffers hold one sealed chunk and one byte more: a sealer's and an
// opener's whole memory.
var chunkBuffers = sync.Pool{New: func() any { b := make([]byte, encChunk+encTag+1); return &b }}

// sealer reads plaintext from src and gives the sealed object.
type sealer struct {
	e     *encrypted
	name  string
	src   io.Reader
	size  int64 // announced, or -1
	read  int64 // plaintext read so far
	aead  cipher.AEAD
	buf   *[]byte
	out   []byte // sealed bytes not yet given out
	keep  int    // plaintext bytes at the start of buf for the next chunk (0 or 1)
	carry byte   // the byte read past the current chunk
	n     uint64 // next chunk's number
	nonce [12]byte
	done  bool
	err   error
}

func (e *encrypted) seal(name string, src io.Reader, size int64) *sealer {
	return &sealer{e: e, name: name, src: src, size: size}
}

// Read fills p across chunks, so that a reader of fixed-size buffers
// (io.Copy's 32 KiB) writes whole buffers, not a tag's 16 bytes after
// each chunk.
func (s *sealer) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(s.out) == 0 {
			switch {
			case s.err != nil:
			case s.done:
				s.free()
				s.err = io.EOF
			default:
				if s.err = s.fill(); s.err != nil {
					s.free()
				}
			}
			if s.err != nil {
				if n > 0 {
					return n, nil
				}
				return 0, s.err
			}
		}
		c := copy(p[n:], s.out)
		s.out = s.out[c:]
		n += c
	}
	return n, nil
}

func (s *sealer) free() {
	if s.buf != nil {
		chunkBuffers.Put(s.buf)
		s.buf = nil
	}
}

// fill seals the next chunk into s.out.
func (s *sealer) fill() error {
	if s.aead == nil {
		header := make([]byte, encHeader)
		copy(header, encMagic)
		rand.Read(header[len(encMagic):])
		aead, err := s.e.objectAEAD(s.name, header[len(encMagic):])
		if err != nil {
			return err
		}
		s.aead, s.buf, s.out = aead, chunkBuffers.Get().(*[]byte), header
		return nil
	}
	buf := (*s.buf)[:encChunk+1]
	if s.keep > 0 {
		buf[0] = s.carry
	}
	m, err := io.ReadFull(s.src, buf[s.keep:])
	n := s.keep + m
	s.read += int64(m)
	last := false
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		last = true
	default:
		return err
	}
	if s.size >= 0 && (s.read > s.size || last && s.read != s.size) {
		if s.read > s.size {
			return fmt.Errorf("%w (%d)", errLonger, s.size)
		}
		return fmt.Errorf("read %d bytes, want %d", s.read, s.size)
	}
	if !last {
		n, s.carry, s.keep = encChunk, buf[encChunk], 1
	}
	s.out = s.aead.Seal(buf[:0], chunkNonce(&s.nonce, s.n, last), buf[:n], nil)
	s.n++
	s.done = last
	return nil
}

// damagedError is a read of an object that does not decrypt: changed,
// cut short, or not sealed under this key and name.
type damagedError struct {
	repo, name, why string
}

func (d *damagedError) Error() string {
	return fmt.Sprintf("repo: %s: get %s: %s", d.repo, d.name, d.why)
}

// opener reads a sealed object from src and gives its plaintext.
type opener struct {
	e     *encrypted
	name  string
	src   io.ReadCloser
	aead  cipher.AEAD
	buf   *[]byte
	out   []byte // plaintext not yet given out
	keep  int    // sealed bytes at the start of buf for the next chunk (0 or 1)
	carry byte
	n     uint64
	nonce [12]byte
	done  bool
	err   error
}

func (e *encrypted) open(name string, src io.ReadCloser) *opener {
	return &opener{e: e, name: name, src: src}
}

func (o *opener) damaged(format string, args ...any) error {
	return &damagedError{repo: o.e.String(), name: o.name, why: fmt.Sprintf(format, args...)}
}

// start reads the header and derives the object's key.
func (o *opener) start() error {
	var header [encHeader]byte
	n, err := io.ReadFull(o.src, header[:])
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF || err == nil && string(header[:len(encMagic)]) != encMagic:
		if n >= len(encMagic) && string(header[:len(encMagic)]) != encMagic || n < len(encMagic) && !strings.HasPrefix(encMagic, string(header[:n])) {
			return o.damaged("is not encrypted (it does not start with %q): it was written without encryption, or is damaged", encMagic)
		}
		return o.damaged("is cut short: %d bytes, fewer than an encrypted object's header", n)
	case err != nil:
		return fmt.Errorf("repo: %s: get %s: %w", o.e, o.name, err)
	}
	aead, err := o.e.objectAEAD(o.name, header[len(encMagic):])
	if err != nil {
		return err
	}
	o.aead, o.buf = aead, chunkBuffers.Get().(*[]byte)
	return nil
}

// Read fills p across chunks, as the sealer's does; it hands out only
// chunks that decrypted.
func (o *opener) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(o.out) == 0 {
			switch {
			case o.err != nil:
			case o.done:
				o.err = io.EOF
			case o.aead == nil:
				if o.err = o.start(); o.err == nil {
					o.err = o.fill()
				}
			default:
				o.err = o.fill()
			}
			if o.err != nil {
				if n > 0 {
					return n, nil
				}
				return 0, o.err
			}
		}
		c := copy(p[n:], o.out)
		o.out = o.out[c:]
		n += c
	}
	return n, nil
}

// fill opens the next chunk into o.out.
func (o *opener) fill() error {
	buf := (*o.buf)[:encChunk+encTag+1]
	if o.keep > 0 {
		buf[0] = o.carry
	}
	m, err := io.ReadFull(o.src, buf[o.keep:])
	n := o.keep + m
	last := false
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		last = true
	default:
		return fmt.Errorf("repo: %s: get %s: %w", o.e, o.name, err)
	}
	if !last {
		n, o.carry, o.keep = encChunk+encTag, buf[encChunk+encTag], 1
	}
	at := int64(encHeader) + int64(o.n)*(encChunk+encTag)
	if n < encTag {
		return o.damaged("is cut short: %d bytes at byte %d, fewer than a chunk's tag", n, at)
	}
	dst := o.buf
	if last {
		// Opened out of place, so that a last chunk that fails can be
		// tried as one that is not the last (a failed Open clears its
		// output): that tells a cut at a chunk's boundary from a change.
		dst = chunkBuffers.Get().(*[]byte)
	}
	plain, err := o.aead.Open((*dst)[:0], chunkNonce(&o.nonce, o.n, last), buf[:n], nil)
	if last {
		if err == nil {
			o.buf, dst = dst, o.buf
		} else if _, err2 := o.aead.Open((*dst)[:0], chunkNonce(&o.nonce, o.n, false), buf[:n], nil); err2 == nil {
			err = o.damaged("is cut short: it ends after chunk %d (byte %d), which is not its last", o.n, at+int64(n))
		}
		chunkBuffers.Put(dst)
	}
	if _, ok := err.(*damagedError); ok {
		return err
	} else if err != nil {
		return o.damaged("chunk %d (bytes %d to %d) does not decrypt: the object is damaged, or was not written under this name with this key", o.n, at, at+int64(n))
	}
	o.out = plain
	o.n++
	o.done = last
	return nil
}

var errClosed = errors.New("read after close")

func (o *opener) Close() error {
	o.err = errClosed
	if o.buf != nil {
		chunkBuffers.Put(o.buf)
		o.buf = nil
		o.out = nil
	}
	return o.src.Close()
}

// plain is a repository opened without a key: it refuses to work on one
// whose objects are encrypted.
type plain struct {
	Repository

	mu sync.Mutex
	ok bool
}

// ready checks, once, that the repository has no key check.
func (p *plain) ready(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ok {
		return nil
	}
	_, err := p.Repository.Stat(ctx, KeyCheckName)
	switch {
	case err == nil:
		return fmt.Errorf("repo: %s is encrypted (it holds %s): set database.backup.encryption_key_file to the key its backups were written with", p, KeyCheckName)
	case !IsNotExist(err):
		return err
	}
	p.ok = true
	return nil
}

func (p *plain) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := p.ready(ctx); err != nil {
		return err
	}
	return p.Repository.Put(ctx, name, r, size)
}

func (p *plain) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := p.ready(ctx); err != nil {
		return nil, err
	}
	return p.Repository.Get(ctx, name)
}

func (p *plain) Stat(ctx context.Context, name string) (Info, error) {
	if err := p.ready(ctx); err != nil {
		return Info{}, err
	}
	return p.Repository.Stat(ctx, name)
}

func (p *plain) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := p.ready(ctx); err != nil {
		return err
	}
	return p.Repository.List(ctx, prefix, fn)
}

func (p *plain) Delete(ctx context.Context, names ...string) error {
	if err := p.ready(ctx); err != nil {
		return err
	}
	return p.Repository.Delete(ctx, names...)
}
