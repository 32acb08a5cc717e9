package pg

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Files haven writes in the data directory on every start.
const (
	// HavenConf holds the user's settings and then the settings haven
	// manages; postgresql.conf includes it on its last line.
	HavenConf = "haven.conf"
	hbaConf   = "pg_hba.conf"
	identConf = "pg_ident.conf"
	// identMap is the pg_ident.conf map that lets haven's user and the
	// run-as user connect as Superuser over the unix socket.
	identMap = "haven"
)

const header = "# Written by haven on every start of postgres and reload of haven: do not edit, changes are lost.\n"

// includeRE finds haven's include line in postgresql.conf.
var includeRE = regexp.MustCompile(`(?m)^[ \t]*include[ \t]*=?[ \t]*'` + regexp.QuoteMeta(HavenConf) + `'[ \t]*(#.*)?$`)

// quoteConf quotes a value for postgresql.conf, where a quoted string
// undergoes backslash escapes and a doubled quote stands for one.
func quoteConf(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// renderHavenConf renders haven.conf: the user's settings sorted by name,
// then the managed ones, which therefore win within the file.
func (s *settings) renderHavenConf() []byte {
	var b bytes.Buffer
	b.WriteString(header)
	b.WriteString("# Change settings in haven's configuration; postgresql.conf includes this file last.\n")
	if len(s.userConf) > 0 {
		b.WriteString("\n# Settings from haven's configuration (and haven's defaults for those it does not set).\n")
		names := make([]string, 0, len(s.userConf))
		for name := range s.userConf {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			fmt.Fprintf(&b, "%s = %s\n", name, quoteConf(s.userConf[name]))
		}
	}
	b.WriteString("\n# Managed by haven (also given on the command line, so ALTER SYSTEM cannot change them).\n")
	for _, m := range s.managed {
		fmt.Fprintf(&b, "%s = %s\n", m.name, quoteConf(m.value))
	}
	if len(s.keeper) > 0 {
		b.WriteString(keeperMarker)
		for _, name := range keeperSettings {
			if v, ok := s.keeper[name]; ok {
				fmt.Fprintf(&b, "%s = %s\n", name, quoteConf(v))
			}
		}
	}
	return b.Bytes()
}

// keeperMarker starts the keeper's section of haven.conf.
const keeperMarker = "\n# Set by haven's keeper as the node's role changes (applied by a reload).\n"

// havenConf renders haven.conf for writeConfig: when the keeper has not set
// its settings yet, the keeper's section of the existing file is kept.
func (s *settings) havenConf() []byte {
	b := s.renderHavenConf()
	if s.keeper != nil {
		return b
	}
	old, err := os.ReadFile(filepath.Join(s.dataDir, HavenConf))
	if err != nil {
		return b
	}
	if i := bytes.Index(old, []byte(keeperMarker)); i >= 0 {
		b = append(b, old[i:]...)
	}
	return b
}

// setKeeper applies edit to the keeper's settings (starting from those in
// haven.conf the first time) and rewrites haven's files. It does not
// reload postgres.
func (s *settings) setKeeper(edit func(map[string]string)) error {
	s.kmu.Lock()
	defer s.kmu.Unlock()
	if s.keeper == nil {
		s.keeper = s.readKeeper()
	}
	edit(s.keeper)
	for name, v := range s.keeper {
		if v == "" {
			delete(s.keeper, name) // back to PostgreSQL's default
		}
	}
	return s.writeConfigLocked()
}

// readKeeper reads the keeper's section of the existing haven.conf, which
// haven wrote: name = 'quoted value' lines.
func (s *settings) readKeeper() map[string]string {
	m := make(map[string]string)
	old, err := os.ReadFile(filepath.Join(s.dataDir, HavenConf))
	if err != nil {
		return m
	}
	i := bytes.Index(old, []byte(keeperMarker))
	if i < 0 {
		return m
	}
	for _, line := range strings.Split(string(old[i+len(keeperMarker):]), "\n") {
		name, v, ok := strings.Cut(line, " = ")
		if !ok || !slices.Contains(keeperSettings, name) || len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
			continue
		}
		v = strings.ReplaceAll(v[1:len(v)-1], "''", "'")
		m[name] = strings.ReplaceAll(v, `\\`, `\`)
	}
	return m
}

// renderHBA renders pg_hba.conf: haven's own access over the unix socket,
// then the configured lines.
func (s *settings) renderHBA() []byte {
	var b bytes.Buffer
	b.WriteString(header)
	b.WriteString("# haven connects over the unix socket as " + Superuser + ": peer authentication, mapped in pg_ident.conf.\n")
	fmt.Fprintf(&b, "local all         %s peer map=%s\n", Superuser, identMap)
	fmt.Fprintf(&b, "local replication %s peer map=%s\n", Superuser, identMap)
	if len(s.hba) > 0 {
		b.WriteString("\n# Lines from haven's configuration.\n")
		for _, line := range s.hba {
			b.WriteString(strings.TrimSpace(line) + "\n")
		}
	}
	return b.Bytes()
}

// renderIdent renders pg_ident.conf: haven's own user and the user postgres
// runs as may connect as Superuser.
func (s *settings) renderIdent() []byte {
	var b bytes.Buffer
	b.WriteString(header)
	users := []string{s.agentUser, s.user.name}
	slices.Sort(users)
	for _, u := range slices.Compact(users) {
		fmt.Fprintf(&b, "%s %s %s\n", identMap, u, Superuser)
	}
	return b.Bytes()
}

// writeConfig writes haven's files into the data directory and makes
// postgresql.conf include haven.conf. It is idempotent: a file whose content
// is already right is left alone.
func (s *settings) writeConfig() error {
	s.kmu.Lock()
	defer s.kmu.Unlock()
	return s.writeConfigLocked()
}

// writeConfigLocked is writeConfig with kmu held.
func (s *settings) writeConfigLocked() error {
	files := []struct {
		name string
		data []byte
	}{
		{HavenConf, s.havenConf()},
		{hbaConf, s.renderHBA()},
		{identConf, s.renderIdent()},
	}
	for _, f := range files {
		if err := s.writeFile(filepath.Join(s.dataDir, f.name), f.data); err != nil {
			return err
		}
	}
	path := filepath.Join(s.dataDir, "postgresql.conf")
	conf, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	if includeRE.Match(conf) {
		return nil
	}
	if len(conf) > 0 && conf[len(conf)-1] != '\n' {
		conf = append(conf, '\n')
	}
	conf = append(conf, "\n# Added by haven: the settings haven manages. Keep this line last.\ninclude '"+HavenConf+"'\n"...)
	return s.writeFile(path, conf)
}

// writeFile replaces path with data, owned by the run-as user with mode
// 0600, unless it already holds data. The new content appears at once
// (written beside, then renamed).
func (s *settings) writeFile(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".haven-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if s.user.drop {
		if err := tmp.Chown(int(s.user.uid), int(s.user.gid)); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// commandLine returns the managed settings as postgres options. Options
// given on the command line win over postgresql.conf and
// postgresql.auto.conf, and a reload cannot change them.
func (s *settings) commandLine() []string {
	args := make([]string, 0, 2*len(s.managed))
	for _, m := range s.managed {
		args = append(args, "-c", m.name+"="+m.value)
	}
	return args
}
