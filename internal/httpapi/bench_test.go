package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
)

// BenchmarkBatch posts batches of 1000 tasks; tasks/s is the figure.
func BenchmarkBatch(b *testing.B) {
	a := newBenchAPI(b)
	var body bytes.Buffer
	body.WriteByte('[')
	for i := range 1000 {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"kind":"upload","args":{"path":"in/%d.png","size":%d,"tags":["a","b"]}}`, i, i*100)
	}
	body.WriteByte(']')
	url := a.srv.URL + "/v1/queues/" + a.queue + "/tasks/batch"
	b.ResetTimer()
	for b.Loop() {
		resp, err := a.srv.Client().Post(url, "application/json", bytes.NewReader(body.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatal(resp.Status)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkSingle posts one task a request, from several goroutines.
func BenchmarkSingle(b *testing.B) {
	a := newBenchAPI(b)
	url := a.srv.URL + "/v1/queues/" + a.queue + "/tasks"
	body := []byte(`{"kind":"upload","args":{"path":"in/1.png","size":100,"tags":["a","b"]}}`)
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := a.srv.Client().Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Error(resp.Status)
				return
			}
		}
	})
}

func newBenchAPI(b *testing.B) *api {
	return newAPI(b, testenv.Redis(b), Config{})
}

// BenchmarkEnqueueMany is BenchmarkBatch's tasks through the client
// alone, for comparison.
func BenchmarkEnqueueMany(b *testing.B) {
	a := newBenchAPI(b)
	specs := make([]client.Spec, 1000)
	for i := range specs {
		specs[i] = client.Spec{Args: benchArgs{Path: fmt.Sprintf("in/%d.png", i), Size: i * 100, Tags: []string{"a", "b"}}, Opts: &client.EnqueueOpts{Queue: a.queue}}
	}
	for b.Loop() {
		if _, err := a.c.EnqueueMany(context.Background(), specs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "tasks/s")
}

type benchArgs struct {
	Path string   `msgpack:"path"`
	Size int      `msgpack:"size"`
	Tags []string `msgpack:"tags"`
}

func (benchArgs) Kind() string { return "upload" }

// BenchmarkBatchParallel is BenchmarkBatch from 4 callers at once.
func BenchmarkBatchParallel(b *testing.B) {
	a := newBenchAPI(b)
	var body bytes.Buffer
	body.WriteByte('[')
	for i := range 1000 {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"kind":"upload","args":{"path":"in/%d.png","size":%d,"tags":["a","b"]}}`, i, i*100)
	}
	body.WriteByte(']')
	url := a.srv.URL + "/v1/queues/" + a.queue + "/tasks/batch"
	b.SetParallelism(2)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := a.srv.Client().Post(url, "application/json", bytes.NewReader(body.Bytes()))
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Error(resp.Status)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "tasks/s")
}
