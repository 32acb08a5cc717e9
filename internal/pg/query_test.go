package pg

import "testing"

func TestLSN(t *testing.T) {
	for _, tc := range []struct {
		text string
		lsn  LSN
	}{
		{"0/0", 0},
		{"0/1548F80", 0x1548F80},
		{"16/B374D848", 0x16_B374D848},
		{"FFFFFFFF/FFFFFFFF", ^LSN(0)},
	} {
		got, err := ParseLSN(tc.text)
		if err != nil || got != tc.lsn {
			t.Errorf("ParseLSN(%q) = %d, %v; want %d", tc.text, got, err, tc.lsn)
		}
		if s := tc.lsn.String(); s != tc.text {
			t.Errorf("LSN(%d).String() = %q; want %q", tc.lsn, s, tc.text)
		}
	}
	for _, bad := range []string{"", "0", "/0", "0/", "1/2/3", "x/0", "100000000/0", "-1/0", "+1/0", " 0/0"} {
		if l, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) = %v; want an error", bad, l)
		}
	}
}

func FuzzParseLSN(f *testing.F) {
	f.Add("16/B374D848")
	f.Add("0/0")
	f.Add("0a/0B")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		again, err := ParseLSN(l.String())
		if err != nil || again != l {
			t.Fatalf("ParseLSN(%q) = %v, which reads back as %v, %v", s, l, again, err)
		}
	})
}
