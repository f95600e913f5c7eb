package loopback

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.0.0.1:8080": true, "127.9.9.9:1": true, "[::1]:80": true, "::1": true,
		"localhost": true, "LocalHost:80": true,
		"0.0.0.0:80": false, ":80": false, "": false, "10.0.0.1": false, "[::]:80": false,
		"example.com": false, "localhost.": false, "localhost.example.com:80": false, "127.0.0.1.nip.io": false,
	} {
		if got := Host(host); got != want {
			t.Errorf("Host(%q) = %v, want %v", host, got, want)
		}
	}
}
