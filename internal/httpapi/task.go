package httpapi

import "encoding/json"

// TaskObject is a task as the API takes it: the body of POST
// /v1/queues/{queue}/tasks, an element of a batch, a member or the join of a
// group. Durations are Go durations ("10s", "1h30m"); times RFC 3339.
type TaskObject struct {
	Kind         string            `json:"kind"`
	Args         json.RawMessage   `json:"args,omitempty"`
	Queue        string            `json:"queue,omitempty"` // groups' members and join; elsewhere the path's, and a different one is refused
	ID           string            `json:"id,omitempty"`
	Delay        string            `json:"delay,omitempty"`
	ProcessAt    string            `json:"process_at,omitempty"`
	MaxAttempts  int               `json:"max_attempts,omitempty"`
	Timeout      string            `json:"timeout,omitempty"`
	Deadline     string            `json:"deadline,omitempty"`
	Retention    string            `json:"retention,omitempty"`
	Meta         map[string]string `json:"meta,omitempty"`
	RateKey      string            `json:"rate_key,omitempty"`
	PartitionKey string            `json:"partition_key,omitempty"`
}
