package main

import (
	"errors"
	"flag"
	"io"
	"os"
)

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("haven "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// configFlag is every command's -c: the configuration file, by default
// $HAVEN_CONFIG (the systemd unit sets /etc/haven/haven.yaml), else
// haven.yaml in the working directory.
func configFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("HAVEN_CONFIG")
	if def == "" {
		def = "haven.yaml"
	}
	return fs.String("c", def, "configuration file ($HAVEN_CONFIG when set)")
}

// parseInterleaved parses flags that may come after positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// errHelp is a command's answer to -h: the flag set has printed the usage,
// and haven exits 0.
var errHelp = errors.New("help")

// parseError is a command's answer to a flag set's parse error. The flag
// set has printed the usage already (after the problem, unless -h asked for
// it): the command must not print it again.
func parseError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	return errUsage
}
