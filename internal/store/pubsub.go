package store

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Sub is one pub/sub connection on the queues' done channels, for the
// engine's notification hub (SubscribeControl and SubscribeDueWake open
// the workers' and coordinators' connections). go-redis
// reconnects it and subscribes again after a broken connection; the new
// confirmation comes through Receive, so that a listener knows messages may
// have been missed.
type Sub struct {
	ps *redis.PubSub
}

// Subscribe opens a Sub on channels (none: Sub.Subscribe adds them later).
func Subscribe(ctx context.Context, rdb redis.UniversalClient, channels ...string) *Sub {
	return &Sub{ps: rdb.Subscribe(ctx, channels...)}
}

// Subscribe adds channels.
func (s *Sub) Subscribe(ctx context.Context, channels ...string) error {
	return s.ps.Subscribe(ctx, channels...)
}

// Notice is what a Sub received: a message, or the confirmation that the
// connection subscribed to Channel (Subscribed).
type Notice struct {
	Subscribed bool
	Channel    string
	Payload    string
}

// Receive waits for the next message or subscribe confirmation; other
// replies (unsubscribe confirmations, pongs) are skipped. An error means the
// connection broke (the next call reconnects) or ctx ended.
func (s *Sub) Receive(ctx context.Context) (Notice, error) {
	for {
		msg, err := s.ps.Receive(ctx)
		if err != nil {
			return Notice{}, err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				return Notice{Subscribed: true, Channel: m.Channel}, nil
			}
		case *redis.Message:
			return Notice{Channel: m.Channel, Payload: m.Payload}, nil
		}
	}
}

// Close closes the connection; a Receive in progress returns an error.
func (s *Sub) Close() error { return s.ps.Close() }
