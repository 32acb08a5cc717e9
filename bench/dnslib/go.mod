module github.com/haven-ha/haven/bench/dnslib

go 1.26.8

require (
	codeberg.org/miekg/dns v0.6.0
	github.com/miekg/dns v1.1.73
)

require (
	golang.org/x/crypto v0.54.0 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
