package ratelimit_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/ratelimit"
)

// Throttle calls to an external API across every process that shares the
// Redis: at most 20 per second, in bursts of up to 5.
func ExampleLimiter_Wait() {
	mr, err := miniredis.Run() // your Redis in production
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	api := ratelimit.New(rdb, ratelimit.Limit{Rate: 20, Per: time.Second, Burst: 5})
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < 7; i++ {
		if err := api.Wait(ctx, "partner-api", 1); err != nil {
			log.Fatal(err)
		}
		// call the API here
	}
	// 5 at once, then one every 50ms.
	fmt.Println(time.Since(start) >= 90*time.Millisecond)
	// Output: true
}

func ExampleLimiter_Allow() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	logins := ratelimit.New(rdb, ratelimit.Limit{Rate: 3, Per: time.Minute, Burst: 3})
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		r, err := logins.Allow(ctx, "login:alice", 1)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(r.Allowed, r.Remaining, r.RetryAfter.Round(time.Second))
	}
	// Output:
	// true 2 0s
	// true 1 0s
	// true 0 0s
	// false 0 20s
}

// Keep every upload to one bucket, across the fleet, under 1 MiB/s: the
// body is read through the limiter as the client sends it.
func ExampleBandwidthLimiter_Reader() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	bw := ratelimit.NewBandwidth(rdb, ratelimit.Bandwidth{BytesPerSecond: 1 << 20, Burst: 64 << 10})
	body := strings.NewReader(strings.Repeat("x", 192<<10))
	start := time.Now()
	n, err := io.Copy(io.Discard, bw.Reader(context.Background(), "s3:bucket-a", body)) // your upload here
	if err != nil {
		log.Fatal(err)
	}
	// 64 KiB at once, the other 128 KiB at 1 MiB/s.
	fmt.Println(n, time.Since(start) >= 120*time.Millisecond)
	// Output: 196608 true
}
