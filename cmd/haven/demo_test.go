package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the README's first command. It kills a backend with
// kill -9 under steady traffic; the clients must not see a single failure.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs for 20s")
	}
	r := haven(t, 90*time.Second, "demo", "--duration", "20s")
	if r.code != 0 {
		t.Fatalf("haven demo --duration 20s:\n%s", r)
	}
	for _, want := range []string{
		"haven demo " + testVersion,
		"kill -9 web2",
		"web2 restarted",
		"marked web2 down",
		"marked web2 up again",
		"first request served by web2 again",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, r.stdout)
		}
	}
	m := regexp.MustCompile(`requests sent (\d+), failed (\d+)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("the demo's output has no \"requests sent N, failed M\":\n%s", r.stdout)
	}
	if m[1] == "0" || m[2] != "0" {
		t.Errorf("the demo sent %s requests and %s failed, want some sent and \"failed 0\":\n%s", m[1], m[2], r.stdout)
	}
}
