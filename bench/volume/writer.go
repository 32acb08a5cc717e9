package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// fileSize is each file's size: a small upload.
const fileSize = 16 << 10

// writer creates files in a directory, each fileSize bytes written and
// fsynced before the next, and remembers each acknowledged one's digest.
// With every > 0 it starts one file per every (the fault scenarios'
// steady load); with 0 as fast as it can (throughput).
type writer struct {
	dir   string
	name  string
	every time.Duration

	mu       sync.Mutex
	acked    map[string][32]byte
	refused  int
	firstErr string
	longest  time.Duration // the longest single write
}

func newWriter(dir, name string, every time.Duration) (*writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &writer{dir: dir, name: name, every: every, acked: map[string][32]byte{}}, nil
}

// body is file name's content: its own, so that a copy healed from the
// wrong file shows.
func body(name string) []byte {
	seed := sha256.Sum256([]byte(name))
	return bytes.Repeat(seed[:], fileSize/len(seed))
}

// run writes until stop closes, or limit files.
func (w *writer) run(stop <-chan struct{}, limit int) {
	next := time.Now()
	for i := 1; i <= limit; i++ {
		select {
		case <-stop:
			return
		default:
		}
		name := fmt.Sprintf("%s-%06d", w.name, i)
		b := body(name)
		start := time.Now()
		err := writeFile(filepath.Join(w.dir, name), b)
		took := time.Since(start)
		w.mu.Lock()
		w.longest = max(w.longest, took)
		if err != nil {
			w.refused++
			if w.firstErr == "" {
				w.firstErr = err.Error()
			}
		} else {
			w.acked[name] = sha256.Sum256(b)
		}
		w.mu.Unlock()
		if w.every > 0 {
			next = next.Add(w.every)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			} else {
				next = time.Now()
			}
		} else if err != nil {
			time.Sleep(100 * time.Millisecond) // a refusing mount answers at once
		}
	}
}

func writeFile(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// missing checks every acknowledged file on each of bricks (the brick
// directories, under sub): how many are absent or differ.
func (w *writer) missing(sub string, bricks []string) (lost int, first string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, sum := range w.acked {
		for _, br := range bricks {
			b, err := os.ReadFile(filepath.Join(br, sub, name))
			if err != nil || sha256.Sum256(b) != sum {
				lost++
				if first == "" {
					first = fmt.Sprintf("%s on %s: %v", name, br, err)
				}
			}
		}
	}
	return lost, first
}

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
