package store

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestResendWindowFromOptions(t *testing.T) {
	def := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer def.Close()
	// go-redis' defaults: 3 retries, 1 s most backoff, 5 s read and write
	// timeouts, 6 s pool wait, five dials of 5 s with 100 ms between.
	want := 5*time.Second + 3*(time.Second+6*time.Second+5*(5100*time.Millisecond)+5*time.Second+5*time.Second)
	if got := ResendWindow(def); got != want {
		t.Fatalf("default client: window %v, want %v", got, want)
	}
	if ttl := MarkerTTL(def); ttl <= want {
		t.Fatalf("marker TTL %v does not cover the window %v", ttl, want)
	}

	none := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, ReadTimeout: time.Second})
	defer none.Close()
	if got := ResendWindow(none); got != time.Second {
		t.Fatalf("client without retries: window %v, want the first read's 1s", got)
	}

	forever := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: -1})
	defer forever.Close()
	if got := ResendWindow(forever); got != resendCap {
		t.Fatalf("client without read timeout: window %v, want the cap %v", got, resendCap)
	}

	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, MaxRetries: 1, ReadTimeout: time.Second, DialTimeout: time.Second, PoolTimeout: time.Second, MaxRetryBackoff: 100 * time.Millisecond})
	defer cl.Close()
	// 2 tries per node client, 4 rounds of the cluster client (3 redirects).
	per := 100*time.Millisecond + time.Second + 5*(time.Second+100*time.Millisecond) + time.Second + time.Second
	if got, want := ResendWindow(cl), time.Second+7*per; got != want {
		t.Fatalf("cluster client: window %v, want %v", got, want)
	}

	if on, known := ContextDeadlines(def); on || !known {
		t.Fatalf("ContextDeadlines(default client) = %v, %v; want false, true", on, known)
	}
	ctxc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	defer ctxc.Close()
	if on, _ := ContextDeadlines(ctxc); !on {
		t.Fatal("ContextDeadlines missed ContextTimeoutEnabled")
	}
}
