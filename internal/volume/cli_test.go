package volume

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// The testdata answers are GlusterFS 10.3's own, taken from a replica 3
// arbiter 1 volume with the third server's brick killed.
func decodeFile(t *testing.T, name string) (*cliOutput, error) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return decodeCLI(b, nil, []string{name})
}

func TestDecodeVolumeStatus(t *testing.T) {
	v, err := decodeFile(t, "volume-status.xml")
	if err != nil {
		t.Fatal(err)
	}
	bricks, shds := processesOf(v)
	if len(bricks) != 3 || len(shds) != 3 {
		t.Fatalf("%d bricks and %d self-heal daemons, want 3 and 3: %+v %+v", len(bricks), len(shds), bricks, shds)
	}
	for i, want := range []bool{true, true, false} {
		if bricks[i].Online != want {
			t.Errorf("brick %s online = %v, want %v", bricks[i].Host, bricks[i].Online, want)
		}
	}
	if bricks[2].PID != 0 || bricks[0].PID == 0 || bricks[0].Port == 0 {
		t.Errorf("pids and ports: %+v (a dead brick's -1 is 0, a live one has both)", bricks)
	}
	if shds[0].Host != "localhost" || shds[0].Path != "" || !shds[0].Online {
		t.Errorf("this node's self-heal daemon: %+v, want host localhost, online", shds[0])
	}
}

func TestDecodeVolumeInfo(t *testing.T) {
	v, err := decodeFile(t, "volume-info.xml")
	if err != nil {
		t.Fatal(err)
	}
	info := infoOf(v)
	if info.Name != "files" || info.Status != "Started" || info.Replica != 3 || !info.Arbiter || len(info.Bricks) != 3 {
		t.Errorf("info = %+v, want files, Started, replica 3 with an arbiter, 3 bricks", info)
	}
	if !strings.HasPrefix(info.Bricks[0], "198.18.9.1:") {
		t.Errorf("bricks = %v, want HOST:PATH in replica order", info.Bricks)
	}
	if len(info.Options) == 0 {
		t.Errorf("no options read")
	}
}

func TestDecodeMissingVolume(t *testing.T) {
	v, err := decodeFile(t, "volume-info-missing.xml")
	if err == nil || v == nil || !strings.Contains(v.OpErrstr, "does not exist") {
		t.Fatalf("decode = %+v, %v; want the error glusterd gave", v, err)
	}
}

func TestDecodePool(t *testing.T) {
	v, err := decodeFile(t, "pool-list.xml")
	if err != nil {
		t.Fatal(err)
	}
	peers := peersOf(v)
	if len(peers) != 3 || !slices.ContainsFunc(peers, func(p Peer) bool { return p.Self }) {
		t.Fatalf("peers = %+v, want three with this node as self", peers)
	}
	for _, p := range peers {
		if !p.Connected {
			t.Errorf("%s not connected", p.Hostname)
		}
	}
}

func TestDecodeRefusesGarbage(t *testing.T) {
	if _, err := decodeCLI([]byte("Connection failed. Please check if gluster daemon is operational."), errors.New("exit status 1"), []string{"pool", "list"}); err == nil {
		t.Fatal("a non-XML answer decoded")
	}
}

func TestParseHealCounts(t *testing.T) {
	b, err := os.ReadFile("testdata/heal-count.txt")
	if err != nil {
		t.Fatal(err)
	}
	counts := parseHealCounts(b, "Number of entries")
	if len(counts) != 3 {
		t.Fatalf("counts = %+v, want three bricks", counts)
	}
	if !counts[0].Known || counts[0].n != 0 || counts[2].Known {
		t.Errorf("counts = %+v: the dead brick's count must be unknown, the others known", counts)
	}
	b, err = os.ReadFile("testdata/info-summary.txt")
	if err != nil {
		t.Fatal(err)
	}
	split := parseHealCounts(b, "Number of entries in split-brain")
	pending := parseHealCounts(b, "Number of entries in heal pending")
	if len(split) != 3 || !split[0].Known || split[2].Known || pending[0].n != 1 {
		t.Errorf("split-brain %+v, pending %+v: want known for the connected bricks, 1 pending", split, pending)
	}
}
