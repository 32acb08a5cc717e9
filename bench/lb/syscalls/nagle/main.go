// Command nagle times requests from a client that keeps Nagle's algorithm
// on and writes a request's head and body in two small writes, as some
// HTTP clients do: the body waits until the head is acknowledged, so a
// proxy that delays that acknowledgement (delayed ACK, 40 ms on Linux)
// shows it here. Used by packets.sh; prints the median and the slowest.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "the proxy's address")
	n := flag.Int("n", 20, "requests, each on a new connection")
	flag.Parse()
	var took []time.Duration
	for range *n {
		d, err := one(*addr)
		if err != nil {
			log.Fatalf("%s: %v", *addr, err)
		}
		took = append(took, d)
	}
	slices.Sort(took)
	fmt.Printf("%s: median %v, slowest %v over %d requests\n", *addr, took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond), len(took))
}

func one(addr string) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.(*net.TCPConn).SetNoDelay(false); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(c, "hello"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return time.Since(start), nil
}
