package wal

// Lag returns how much WAL the server has written that the repository
// does not hold yet, as last heard from the server, and how long ago the
// repository last held all of it (0 when it does now): what the
// haven_backup_wal_lag_bytes and _seconds metrics export, for status.
func (a *Archiver) Lag() (bytes uint64, seconds float64) {
	return uint64(a.lagBytes()), a.lagSeconds()
}
