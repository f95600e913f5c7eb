// Package loopback tells loopback addresses from others, for the servers
// (the dashboard, the HTTP API) that serve without authentication only on
// one.
package loopback

import (
	"net"
	"strings"
)

// Host reports whether host (a Host header's host:port, an address's host,
// or a bare host, IPv6 in brackets or not) names localhost or a loopback
// address (127.0.0.0/8, ::1).
func Host(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
