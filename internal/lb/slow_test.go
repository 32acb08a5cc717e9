package lb

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Slow transfers: an upload from a client that sends 8 KiB/s and a download
// to a client that reads slowly both last many client timeouts and succeed,
// because the timeouts bound silence, not transfers.
//
// The transfers last HAVEN_SLOW_TRANSFER (such as 3m) with the default
// timeouts (60s), or, by default, 10s with 2s timeouts: twenty pauses of
// half a second each, five times the timeout in all.
//
// A download makes haven wait only once the kernel's buffers between haven
// and the reader are full, and they hold over a megabyte even with the
// client's socket shaped like one across a real network (an MSS of 1460, a
// small receive buffer; on loopback the MSS is 64 KiB and they hold
// megabytes). So the reader is slow but not too slow to fill them: 512 KiB/s
// for 10s against a 2s timeout, 32 KiB/s for 3m against 60s, and haven's
// writes wait for most of the transfer, many timeouts in all. (How a write
// outlives its deadline while the peer acknowledges data is
// TestIdleWriterFollowsAcknowledgements.)

// slowTransfer returns how long a slow transfer lasts, the balancer
// settings it runs with and the rate at which the slow download is read.
func slowTransfer(t *testing.T) (d time.Duration, body string, readRate int) {
	t.Helper()
	if testing.Short() {
		t.Skip("lasts 10s (not in -short)")
	}
	v := os.Getenv("HAVEN_SLOW_TRANSFER")
	if v == "" {
		return 10 * time.Second, "    timeouts: {client: 2s, server: 2s}\n", 512 << 10
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("HAVEN_SLOW_TRANSFER=%q: want a duration such as 3m", v)
	}
	return d, "", 32 << 10 // the default timeouts
}

const (
	slowRate  = 8 << 10 // bytes a second
	slowSlice = 500 * time.Millisecond
	slowPiece = slowRate / 2 // per slice
)

// slowDialer dials like a client across a network: small segments, a small
// receive window.
func slowDialer() *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, 1460); serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<10)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
}

func TestSlowUpload(t *testing.T) {
	d, body, _ := slowTransfer(t)
	b := newCountingBackend(t, "b1", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	lb := startLB(t, body, "", b.addr())
	pieces := int(d / slowSlice)
	size := pieces * slowPiece
	c, err := slowDialer().Dial("tcp", lb.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(d + time.Minute))
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
	h := sha256.New()
	piece := make([]byte, slowPiece)
	start := time.Now()
	for i := range pieces {
		for j := range piece {
			piece[j] = byte(i + j)
		}
		h.Write(piece)
		if _, err := c.Write(piece); err != nil {
			t.Fatalf("after %d of %d bytes: %v", i*slowPiece, size, err)
		}
		time.Sleep(slowSlice)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	got, _ := io.ReadAll(resp.Body)
	want := fmt.Sprintf("%d %x", size, h.Sum(nil))
	if resp.StatusCode != 200 || string(got) != want {
		t.Errorf("after %v: %s %q, want 200 %q", time.Since(start), resp.Status, got, want)
	}
	t.Logf("uploaded %d bytes in %v", size, time.Since(start).Round(time.Millisecond))
}

func TestSlowDownload(t *testing.T) {
	d, body, rate := slowTransfer(t)
	piece := make([]byte, rate/2) // every slowSlice
	size := int(d/slowSlice) * len(piece)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	want := sha256.Sum256(data)
	b := newCountingBackend(t, "b1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(data)
	})
	lb := startLB(t, body, "", b.addr())
	c, err := slowDialer().Dial("tcp", lb.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(d + time.Minute))
	io.WriteString(c, "GET /download HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReaderSize(c, len(piece))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var got bytes.Buffer
	for {
		n, err := io.ReadFull(resp.Body, piece)
		got.Write(piece[:n])
		if err != nil {
			break
		}
		time.Sleep(slowSlice)
	}
	if resp.StatusCode != 200 || got.Len() != size || sha256.Sum256(got.Bytes()) != want {
		t.Errorf("after %v: %s, %d of %d bytes (intact: %v)", time.Since(start), resp.Status, got.Len(), size, sha256.Sum256(got.Bytes()) == want)
	}
	t.Logf("downloaded %d bytes in %v", got.Len(), time.Since(start).Round(time.Millisecond))
}

// TestIdleWriterFollowsAcknowledgements: a write to a peer that reads
// steadily goes on past its deadline while the peer acknowledges data, and
// fails once the peer stops reading.
func TestIdleWriterFollowsAcknowledgements(t *testing.T) {
	if testing.Short() {
		t.Skip("lasts seconds (not in -short)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	stop, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c, err := slowDialer().Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		for {
			select {
			case <-stop:
				stopped <- struct{}{}
				<-release // hold the connection open, reading nothing
				return
			case <-time.After(20 * time.Millisecond):
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A 2 MiB send buffer: a blocked write wakes once a third of it is
	// free, seconds at the peer's 200 KiB/s, later than the 1s timeout.
	rc, _ := c.(*net.TCPConn).SyscallConn()
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20) })
	w := &idleWriter{c: c, idle: time.Second}
	chunk := make([]byte, 32<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	var sent int64
	for ctx.Err() == nil {
		n, err := w.Write(chunk)
		sent += int64(n)
		if err != nil {
			t.Fatalf("write to a reading peer failed after %d bytes: %v", sent, err)
		}
	}
	if !w.acked.seen {
		t.Fatalf("no write outlived its deadline in %d bytes: the test proves nothing", sent)
	}
	select {
	case stop <- struct{}{}:
		<-stopped
	case <-stopped: // the reader failed
		t.Fatal("the reader stopped early")
	}
	// The peer reads no more: the writer gives up.
	for {
		if _, err := w.Write(chunk); err != nil {
			if !isTimeout(err) {
				t.Errorf("writing to a peer that stopped reading: %v, want a timeout", err)
			}
			break
		}
	}
}
