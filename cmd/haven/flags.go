package main

import (
	"errors"
	"flag"
	"io"
)

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("haven "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
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
