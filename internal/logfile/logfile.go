// Package logfile is a file of log lines written from a hot path: a line
// is appended to a 64 KiB buffer under a lock, and the buffer reaches the
// file every second or when it fills, so that a busy balancer or name
// server makes a write system call per few hundred lines rather than one
// per line. The balancers' access logs and the name servers' query logs
// use it; the owner opens the path again on a reload, which lets logrotate
// move the old file away.
package logfile

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

const (
	bufferSize = 64 << 10
	flushEvery = time.Second
)

// File is an open log file. Its methods are safe for concurrent use.
//
// A write to the file happens under the lock, so a disk that blocks
// holds the writers (the data plane) for as long: the buffer makes that a
// write per 64 KiB, and a log that must never block belongs on a fast
// local disk or standard output.
type File struct {
	mu     sync.Mutex
	w      *bufio.Writer
	out    io.Writer
	f      *os.File // nil: standard output, never closed
	closed bool
	stop   chan struct{}
	done   chan struct{}
}

// Open opens path for appending (creating it, mode 0640), or the
// process's standard output for "-", and starts its flusher.
func Open(path string) (*File, error) {
	l := &File{stop: make(chan struct{}), done: make(chan struct{})}
	var out io.Writer = os.Stdout
	if path != "-" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("open log file: %w", err)
		}
		l.f, out = f, f
	}
	l.out, l.w = out, bufio.NewWriterSize(out, bufferSize)
	go l.flusher()
	return l, nil
}

func (l *File) flusher() {
	defer close(l.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			if !l.closed {
				l.flush()
			}
			l.mu.Unlock()
		}
	}
}

// Write appends one line (with its newline). After Close it drops the
// line: a request that began before a reload replaced the file.
func (l *File) Write(line []byte) {
	l.mu.Lock()
	if !l.closed {
		// A line that does not fit goes out whole after the buffer: lines
		// from several logs on standard output never interleave.
		if len(line) > l.w.Available() {
			l.flush()
		}
		l.w.Write(line)
	}
	l.mu.Unlock()
}

// flush writes the buffer out. A failed write (a full disk) loses the
// buffer's lines and starts afresh, rather than leaving the writer stuck
// on its first error until a reload.
func (l *File) flush() {
	if err := l.w.Flush(); err != nil {
		l.w.Reset(l.out)
	}
}

// Close flushes and closes the file; it is idempotent, and a no-op on a
// nil File.
func (l *File) Close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.w.Flush()
	if l.f != nil {
		l.f.Close()
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.done
}
