// Package deploy holds what installs haven on a machine: the systemd unit
// (systemd/haven@.service), the .deb's nfpm configuration (nfpm.yaml) and
// its maintainer scripts (debian/). `make package` builds the .deb; the
// tests build it the same way, install it into a scratch root and verify
// the unit there. docs/install.md is the operator's side.
package deploy
