package galera

import (
	"os"
	"path/filepath"
	"testing"
)

func TestGrastate(t *testing.T) {
	dir := t.TempDir()
	if p, ok, err := readGrastate(dir); err != nil || ok || p.Seqno != -1 {
		t.Fatalf("no file: %+v %v %v, want no position", p, ok, err)
	}
	const crashed = "# GALERA saved state\nversion: 2.1\nuuid:    5e668134-f0fe-11f1-bc9e-0e5cffb70965\nseqno:   -1\nsafe_to_bootstrap: 0\n"
	if err := os.WriteFile(filepath.Join(dir, grastateFile), []byte(crashed), 0o660); err != nil {
		t.Fatal(err)
	}
	p, ok, err := readGrastate(dir)
	if err != nil || !ok || p.UUID != "5e668134-f0fe-11f1-bc9e-0e5cffb70965" || p.Seqno != -1 || p.SafeToBootstrap {
		t.Fatalf("crashed: %+v %v %v", p, ok, err)
	}
	if err := markSafeToBootstrap(dir); err != nil {
		t.Fatal(err)
	}
	p, _, err = readGrastate(dir)
	if err != nil || !p.SafeToBootstrap || p.UUID == "" {
		t.Fatalf("after markSafeToBootstrap: %+v %v", p, err)
	}
	if _, err := parseGrastate([]byte("seqno: x\nuuid: a\n")); err == nil {
		t.Error("a seqno that is not a number was accepted")
	}
	if p, err := parseGrastate([]byte("uuid: " + zeroUUID + "\nseqno: -1\n")); err != nil || !p.None() {
		t.Errorf("zero uuid: %+v %v, want no history", p, err)
	}
}

func TestParseRecovered(t *testing.T) {
	log := []byte("2026-12-05 22:51:19 0 [Note] WSREP: Recovered position: 5e668134-f0fe-11f1-bc9e-0e5cffb70965:4\n" +
		"2026-12-05 22:51:19 0 [Note] Crash table recovery finished.\n")
	p, ok := parseRecovered(log)
	if !ok || p.Seqno != 4 || p.UUID != "5e668134-f0fe-11f1-bc9e-0e5cffb70965" {
		t.Errorf("parseRecovered = %+v %v", p, ok)
	}
	if _, ok := parseRecovered([]byte("[ERROR] Aborting\n")); ok {
		t.Error("a log without a position gave one")
	}
	if p, ok := parseRecovered([]byte("WSREP: Recovered position: " + zeroUUID + ":-1")); !ok || !p.None() {
		t.Errorf("undefined position: %+v %v", p, ok)
	}
}
