package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
)

// fakeOldRedis answers like a Redis 5 server: errors for commands it lacks,
// INFO with an old version.
func fakeOldRedis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					args, err := readCommand(r)
					if err != nil {
						return
					}
					switch strings.ToUpper(args[0]) {
					case "INFO":
						body := "# Server\r\nredis_version:5.0.7\r\n"
						fmt.Fprintf(conn, "$%d\r\n%s\r\n", len(body), body)
					case "PING":
						fmt.Fprint(conn, "+PONG\r\n")
					default:
						fmt.Fprintf(conn, "-ERR unknown command '%s'\r\n", args[0])
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	var n int
	if _, err := fmt.Sscanf(line, "*%d", &n); err != nil {
		return nil, err
	}
	args := make([]string, n)
	for i := range args {
		if _, err := r.ReadString('\n'); err != nil {
			return nil, err
		}
		s, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		args[i] = strings.TrimRight(s, "\r\n")
	}
	return args, nil
}

func TestNewRefusesOldRedis(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: fakeOldRedis(t), Protocol: 2, DisableIdentity: true})
	defer rdb.Close()
	_, err := client.New(context.Background(), rdb, nil)
	if !errors.Is(err, client.ErrRedisTooOld) || !strings.Contains(err.Error(), "5.0.7") || !strings.Contains(err.Error(), "6.2") {
		t.Fatalf("got %v; want a clear refusal naming 5.0.7 and 6.2", err)
	}
}
