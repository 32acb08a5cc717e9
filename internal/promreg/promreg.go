// Package promreg registers Prometheus collectors that more than one
// instance of a component shares: the second keeper, supervisor or owner
// of a node (a role started again after a reconnection) reports on the
// series of the first instead of failing to register.
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Once registers c on reg, or returns the collector of the same
// description registered there before.
func Once[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(T); ok {
			return old, nil
		}
	}
	return c, fmt.Errorf("register metrics: %w", err)
}
