package main

import (
	"fmt"
	"time"

	"github.com/haven-ha/haven/internal/netlab"
)

// checkWANDelay refuses a WAN delay: this netlab has no Options.WANDelay.
func checkWANDelay(d time.Duration) error {
	if d != 0 {
		return fmt.Errorf("-wan-delay %s: this internal/netlab cannot delay the traffic between segments; run without it", d)
	}
	return nil
}

// withWAN sets the one-way delay between the regions on o.
func withWAN(o netlab.Options, d time.Duration) netlab.Options { return o }
