package main

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/haven-ha/haven/internal/config"
)

// bashCompletion is `haven completion bash`: bash asks haven itself for
// the words (`haven __complete WORDS...`), so that the actions follow the
// binary and the node, backend and region names follow haven.yaml.
const bashCompletion = `# bash completion for haven: source <(haven completion bash), or install it
# as /usr/share/bash-completion/completions/haven (the .deb does).
_haven() {
	local cur prev words cword
	# With bash-completion, a backend named by its address (127.0.0.1:9001)
	# is one word, not three split at the colons.
	if declare -F _get_comp_words_by_ref >/dev/null; then
		_get_comp_words_by_ref -n : cur prev words cword
	else
		cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
	fi
	case $prev in
	-c|--html|--to-dir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	-o) if [ "${words[1]}" = certs ]; then COMPREPLY=($(compgen -d -- "$cur")); else COMPREPLY=($(compgen -W "text json" -- "$cur")); fi; return ;;
	esac
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$(haven __complete "${words[@]:1:cword-1}" 2>/dev/null)" -- "$cur"))
	if declare -F __ltrim_colon_completions >/dev/null; then
		__ltrim_colon_completions "$cur"
	fi
}
complete -o default -F _haven haven
`

const completionUsage = "usage: haven completion bash   (zsh: autoload -U bashcompinit && bashcompinit first)\n"

func runCompletion(args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(stderr, completionUsage)
		return errHelp
	}
	if len(args) != 1 || args[0] != "bash" {
		fmt.Fprint(stderr, completionUsage)
		return errUsage
	}
	_, err := io.WriteString(stdout, bashCompletion)
	return err
}

// commandUsages are the usage texts whose "  ACTION ..." lines name a
// command's actions.
var commandUsages = map[string]string{
	"lb": lbUsage, "db": dbUsage, "pg": pgUsage, "vip": vipUsage, "dr": drUsage, "dns": dnsUsage,
	"backup": backupUsage, "drill": drillUsage, "coord": coordUsage,
}

var (
	commandLine = regexp.MustCompile(`(?m)^  haven ([a-z]+) `)
	actionLine  = regexp.MustCompile(`(?m)^  ([a-z][a-z-]*)(?: |$)`)
)

// complete returns the words that may follow words (the command line
// after "haven", without the word being completed).
func complete(words []string) []string {
	if len(words) == 0 {
		var cmds []string
		for _, m := range commandLine.FindAllStringSubmatch(usage, -1) {
			cmds = append(cmds, m[1])
		}
		return append(cmds, "help", "completion")
	}
	cmd, last := words[0], words[len(words)-1]
	cfg := completionConfig(words)
	switch {
	case last == "-n" || (last == "--to" && cmd != "dr"):
		if cfg != nil {
			return cfg.NodeNames()
		}
		return nil
	case last == "--to" && cmd == "dr":
		if cfg != nil {
			return cfg.DatabaseRegions()
		}
		return nil
	case last == "-b" && cfg != nil:
		return sortedKeys(cfg.Balancers)
	case cmd == "completion" && len(words) == 1:
		return []string{"bash"}
	case cmd == "restart":
		if cfg != nil {
			return slices.DeleteFunc(cfg.NodeNames(), func(n string) bool { return slices.Contains(words, n) })
		}
		return nil
	case len(words) == 1:
		var actions []string
		for _, m := range actionLine.FindAllStringSubmatch(commandUsages[cmd], -1) {
			if !slices.Contains(actions, m[1]) {
				actions = append(actions, m[1])
			}
		}
		return actions
	case cmd == "lb" && len(words) == 2 && slices.Contains([]string{"drain", "maint", "enable", "weight"}, words[1]) && cfg != nil:
		var backends []string
		for _, b := range cfg.Balancers {
			for _, be := range b.Backends {
				if !slices.Contains(backends, be.Name) {
					backends = append(backends, be.Name)
				}
			}
		}
		slices.Sort(backends)
		return backends
	case cmd == "dr" && len(words) == 2 && words[1] == "promote" && cfg != nil:
		return cfg.DatabaseRegions()
	case cmd == "pg" && len(words) == 2 && words[1] == "reinit" && cfg != nil && cfg.Database != nil:
		return cfg.Database.Nodes
	}
	return nil
}

// completionConfig loads the file the command line names with -c, else
// $HAVEN_CONFIG or ./haven.yaml; nil when it does not load.
func completionConfig(words []string) *config.Config {
	path := *configFlag(newFlagSet("complete", io.Discard))
	if i := slices.Index(words, "-c"); i >= 0 && i+1 < len(words) {
		path = words[i+1]
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil
	}
	return cfg
}

func runComplete(args []string, stdout io.Writer) error {
	_, err := io.WriteString(stdout, strings.Join(complete(args), "\n")+"\n")
	return err
}
