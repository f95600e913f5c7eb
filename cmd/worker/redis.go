package main

import (
	"flag"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisConn is how a process of this binary reaches Redis: one server
// (REDIS_URL), a Redis Cluster given by seed addresses
// (REDIS_CLUSTER_ADDRS), or the master Sentinel names
// (REDIS_SENTINEL_ADDRS and REDIS_SENTINEL_MASTER). In the last two the
// URL still gives the user, password, TLS (rediss://), the database
// (Sentinel only: a cluster has database 0 alone) and the timeouts; its
// host is not used.
//
// Passwords are never printed: -h shows the URL's default with its
// password as xxxxx, and errors pass through scrub.
type redisConn struct {
	url              secretURL
	cluster          string
	sentinel         string
	master           string
	sentinelPassword secretURL
}

const defaultRedisURL = "redis://127.0.0.1:6379/0"

// redisFlags adds the connection flags to fs, their defaults read from
// the environment.
func redisFlags(fs *flag.FlagSet, getenv func(string) string) *redisConn {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	c := &redisConn{url: secretURL(env("REDIS_URL", defaultRedisURL)), cluster: getenv("REDIS_CLUSTER_ADDRS"),
		sentinel: getenv("REDIS_SENTINEL_ADDRS"), master: getenv("REDIS_SENTINEL_MASTER"),
		sentinelPassword: secretURL(getenv("REDIS_SENTINEL_PASSWORD"))}
	fs.Var(&c.url, "redis", "Redis `URL`: redis://[user:password@]host:port/db, or rediss:// for TLS; with -redis-cluster or -redis-sentinel it gives the user, password, TLS and db, not the host (env REDIS_URL)")
	fs.StringVar(&c.cluster, "redis-cluster", c.cluster, "a Redis Cluster's seed `ADDRS`, host:port,... (env REDIS_CLUSTER_ADDRS)")
	fs.StringVar(&c.sentinel, "redis-sentinel", c.sentinel, "Sentinel `ADDRS`, host:port,...; with -redis-sentinel-master (env REDIS_SENTINEL_ADDRS)")
	fs.StringVar(&c.master, "redis-sentinel-master", c.master, "the master `NAME` Sentinel knows (env REDIS_SENTINEL_MASTER)")
	fs.Var(&c.sentinelPassword, "redis-sentinel-password", "the Sentinels' own `PASSWORD`, if they have one (env REDIS_SENTINEL_PASSWORD)")
	return c
}

// options checks the flags and returns the options of the client they
// describe, without connecting.
func (c *redisConn) options() (*redis.UniversalOptions, error) {
	o, err := redis.ParseURL(string(c.url))
	if err != nil {
		return nil, fmt.Errorf("-redis %s: %w", c.url.String(), c.scrub(err))
	}
	u := &redis.UniversalOptions{
		Addrs: []string{o.Addr}, DB: o.DB, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
		ClientName: o.ClientName, Protocol: o.Protocol,
		MaxRetries: o.MaxRetries, MinRetryBackoff: o.MinRetryBackoff, MaxRetryBackoff: o.MaxRetryBackoff,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		PoolSize: o.PoolSize, PoolTimeout: o.PoolTimeout, MinIdleConns: o.MinIdleConns, MaxIdleConns: o.MaxIdleConns,
		ConnMaxIdleTime: o.ConnMaxIdleTime, ConnMaxLifetime: o.ConnMaxLifetime,
		// Deadlines bound socket reads (see README, Running Redis).
		ContextTimeoutEnabled: true,
	}
	cluster, sentinel := splitAddrs(c.cluster), splitAddrs(c.sentinel)
	switch {
	case len(cluster) > 0 && (len(sentinel) > 0 || c.master != ""):
		return nil, fmt.Errorf("-redis-cluster and -redis-sentinel: give one of them")
	case len(cluster) > 0:
		if o.DB != 0 {
			return nil, fmt.Errorf("-redis %s: a Redis Cluster has database 0 only", c.url.String())
		}
		u.Addrs, u.IsClusterMode = cluster, true
	case len(sentinel) > 0 || c.master != "":
		if len(sentinel) == 0 || c.master == "" {
			return nil, fmt.Errorf("-redis-sentinel and -redis-sentinel-master go together")
		}
		u.Addrs, u.MasterName, u.SentinelPassword = sentinel, c.master, string(c.sentinelPassword)
	}
	return u, nil
}

// client returns a client for the flags: a *redis.Client, a
// *redis.ClusterClient or a Sentinel-backed *redis.Client.
func (c *redisConn) client() (redis.UniversalClient, error) {
	o, err := c.options()
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(o), nil
}

// String describes the target for logs, without passwords.
func (c *redisConn) String() string {
	switch {
	case c.cluster != "":
		return "cluster " + c.cluster
	case c.sentinel != "":
		return "sentinel " + c.sentinel + " master " + c.master
	}
	return c.url.String()
}

// scrub returns err with every password of c replaced by xxxxx, or err
// itself when none appears in it.
func (c *redisConn) scrub(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	out := msg
	// The URL's password as written and as decoded (go-redis uses the
	// latter).
	raw := urlPassword(string(c.url))
	dec, _ := url.PathUnescape(raw)
	for _, s := range []string{raw, dec, string(c.sentinelPassword)} {
		if s != "" {
			out = strings.ReplaceAll(out, s, redacted)
		}
	}
	if out == msg {
		return err
	}
	return scrubbed{msg: out, err: err}
}

// scrubbed is an error whose text had a password taken out; errors.Is and
// As still see the original.
type scrubbed struct {
	msg string
	err error
}

func (s scrubbed) Error() string { return s.msg }
func (s scrubbed) Unwrap() error { return s.err }

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

const redacted = "xxxxx"

// secretURL is a flag value that prints itself with its password
// redacted, so that flag's -h output, which prints defaults, never shows
// one. A value that is not a URL at all (a bare password) prints as xxxxx.
type secretURL string

func (s *secretURL) Set(v string) error { *s = secretURL(v); return nil }

func (s *secretURL) String() string {
	if s == nil || *s == "" {
		return ""
	}
	v := string(*s)
	if !strings.Contains(v, "://") {
		return redacted
	}
	return redactURL(v)
}

// redactURL returns u with the password of its user info replaced by
// xxxxx: redis://app:s3cret@host:6379/0 → redis://app:xxxxx@host:6379/0.
// It works on the text, so a URL that does not parse is redacted too.
func redactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return u
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return u
	}
	return scheme + "://" + user + ":" + redacted + rest[at:]
}

// urlPassword returns the password in u's user info, as written.
func urlPassword(u string) string {
	_, rest, ok := strings.Cut(u, "://")
	if !ok {
		return ""
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return ""
	}
	_, pass, _ := strings.Cut(rest[:at], ":")
	return pass
}
