package harness

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// Machine describes the machine for a report's header, as "key: value"
// lines: the date (UTC), nproc, the CPU model, memory, the kernel and the
// Debian version.
func Machine() []string {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	model, n := parseCPUInfo(string(cpuinfo))
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	debian, _ := os.ReadFile("/etc/debian_version")
	mem := ""
	if mi, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = parseMemTotal(string(mi))
	}
	return []string{
		"date: " + time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		fmt.Sprintf("nproc: %d", n),
		"CPU: " + model,
		"memory: " + mem,
		"kernel: " + strings.TrimSpace(string(kernel)),
		"Debian: " + strings.TrimSpace(string(debian)),
	}
}

// LoadAverage returns the 1, 5 and 15 minute load averages, as
// /proc/loadavg has them: "0.52 0.31 0.27".
func LoadAverage() string {
	load, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(load))
	return strings.Join(f[:min(3, len(f))], " ")
}

// parseCPUInfo returns the first model name in /proc/cpuinfo and the number
// of processors it lists.
func parseCPUInfo(cpuinfo string) (model string, n int) {
	for _, l := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		}
	}
	return model, n
}

var memTotal = regexp.MustCompile(`MemTotal:\s+(\d+) kB`)

// parseMemTotal returns MemTotal of /proc/meminfo in GiB, "15.6 GiB", or ""
// when there is none.
func parseMemTotal(meminfo string) string {
	m := memTotal.FindStringSubmatch(meminfo)
	if m == nil {
		return ""
	}
	var kb int64
	fmt.Sscan(m[1], &kb)
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}
