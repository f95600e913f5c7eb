package inspect

import (
	"context"
	"strings"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Relations are the tasks linked to one task besides its parent and group
// (TaskInfo.Parent, Group): the children its handler enqueued (cancelling
// the task cancels them), the continuations registered on it (they start
// when it ends), and the task or group it continues.
type Relations struct {
	Children      []string `json:"children"`       // child task ids, at most the n asked for
	ChildrenTotal int64    `json:"children_total"` // how many it has
	// Continuations are the ids of the continuations registered and not
	// yet started, the first n; OnSuccessOnly[j] tells whether
	// Continuations[j] starts only if the task succeeds.
	Continuations      []string `json:"continuations"`
	OnSuccessOnly      []bool   `json:"on_success_only"`
	ContinuationsTotal int64    `json:"continuations_total"`
	// Continues is the task or group this task continues ("" when it is
	// not a continuation).
	Continues string `json:"continues,omitempty"`
}

// Relations reads the tasks linked to the task id, at most n (1 to 1000)
// of each kind: one round trip, and one more read of the task's envelope
// for Continues. A task that is unknown has none.
func (i *Inspector) Relations(ctx context.Context, id string, n int) (Relations, error) {
	qn, key, err := keys.SplitTaskID(id)
	if err != nil {
		return Relations{}, err
	}
	n = min(max(n, 1), maxLimit)
	rs, err := store.TaskRelations(ctx, i.rdb, keys.ForQueue(qn), key, n)
	if err != nil {
		return Relations{}, err
	}
	out := Relations{Children: rs.Kids, ChildrenTotal: rs.KidsTotal, ContinuationsTotal: rs.ContsTotal,
		Continuations: []string{}, OnSuccessOnly: []bool{}}
	if out.Children == nil {
		out.Children = []string{}
	}
	for _, c := range rs.Conts {
		cid, only, _ := strings.Cut(c, "|")
		out.Continuations = append(out.Continuations, cid)
		out.OnSuccessOnly = append(out.OnSuccessOnly, only == "1")
	}
	t, err := i.task(ctx, id)
	if err == nil {
		out.Continues = t.prev
	}
	return out, nil
}
