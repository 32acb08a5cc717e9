package pg

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/deadman"
	"github.com/haven-ha/haven/internal/testnet"
)

// TestWriteFence fences a port in one namespace and connects to it from
// another: the port answers only while it is unfenced or open, an open
// port closes by itself at its deadline, even when the commit that opened
// it came late, and a closed one silences established connections too.
func TestWriteFence(t *testing.T) {
	n := testnet.Start(t, testnet.Options{Hosts: []string{"db", "client"}})
	db, client := n.Hosts()[0], n.Hosts()[1]
	fd, err := unix.Open("/var/run/netns/"+db.Namespace, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })

	ln, err := db.Listen("tcp", netip.AddrPortFrom(db.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					c.Write(buf) // echo
				}
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	addr := net.JoinHostPort(db.Addr.String(), strconv.Itoa(port))
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		c, err := client.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		return echo(c)
	}
	must := func(what string, open bool) {
		t.Helper()
		err := dial()
		if open && err != nil {
			t.Fatalf("%s: the port should answer: %v", what, err)
		}
		if !open && err == nil {
			t.Fatalf("%s: the port answered", what)
		}
	}

	f := NewWriteFence(fd, port)
	if err := f.Install(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Remove() })
	must("installed, not fenced (a replica)", true)
	if err := f.Fence(); err != nil {
		t.Fatal(err)
	}
	must("fenced, not open", false)

	if err := f.OpenUntil(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	must("open", true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	held, err := client.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := echo(held); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	must("closed", false)
	if err := echo(held); err == nil {
		t.Fatal("closed: an established connection still gets answers")
	}

	// Open for a short while and walk away: it closes by itself.
	if err := f.OpenUntil(time.Now().Add(400 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	must("open for 400ms", true)
	// The wait is the kernel's own deadline: nothing in haven runs
	// meanwhile, so there is nothing to poll for; past it, the port must
	// have gone silent by itself.
	time.Sleep(600 * time.Millisecond)
	must("600ms after opening for 400ms", false)

	// A commit that comes after the deadline (the agent was frozen
	// between reading its clock and committing) opens nothing that lasts
	// past the deadline.
	deadline := time.Now().Add(time.Second)
	late, checked, answered := true, false, false
	f.sw.SetCommitHooks(func() {
		if late {
			late = false
			// The agent frozen past the kernel's deadline, between
			// reading its clock and committing.
			time.Sleep(time.Until(deadline) + 50*time.Millisecond)
		}
	}, func() {
		if !checked {
			checked = true
			answered = dial() == nil
		}
	})
	if err := f.OpenUntil(deadline); !errors.Is(err, deadman.ErrExpired) {
		t.Fatalf("a commit after the deadline: %v, want ErrExpired", err)
	}
	f.sw.SetCommitHooks(nil, nil)
	if !checked {
		t.Fatal("the late batch was not committed")
	}
	if answered {
		t.Fatal("after the deadline, while the late commit's element was live, the port answered")
	}

	if err := f.Unfence(); err != nil {
		t.Fatal(err)
	}
	must("unfenced again", true)
}

// echo sends one byte on c and waits a little for it to come back.
func echo(c net.Conn) error {
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, 1))
	return err
}
