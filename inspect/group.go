package inspect

import (
	"context"
	"fmt"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// MaxGroupMembersListed is the most members GroupMembers lists: a larger
// group is shown by its counts alone.
const MaxGroupMembersListed = 1000

// GroupDetail is one group with its members.
type GroupDetail struct {
	ID        string    `json:"id"`
	State     string    `json:"state"` // open, succeeded, failed, cancelled; "" when unknown (expired)
	Members   int       `json:"members"`
	Succeeded int       `json:"succeeded"`
	Failed    int       `json:"failed"`
	Limit     int       `json:"limit,omitempty"` // InvokeAll's limit of members running at once
	First     string    `json:"first_failed,omitempty"`
	Parent    string    `json:"parent,omitempty"` // the group this one is a member of
	Join      string    `json:"join,omitempty"`
	Created   time.Time `json:"created,omitzero"`
	Ended     time.Time `json:"ended,omitzero"`
	Cancel    bool      `json:"cancel_requested,omitempty"`
	// WorkDone and WorkTotal sum what the members reported with
	// worker.ReportProgress, as GroupInfo's do.
	WorkDone  int64  `json:"work_done"`
	WorkTotal int64  `json:"work_total"`
	WorkError string `json:"work_error,omitempty"` // as GroupInfo's
	// Listed is set when the members are listed (at most
	// MaxGroupMembersListed of them); ByState then counts them by state.
	Listed     bool           `json:"listed"`
	MemberList []GroupMember  `json:"member_list,omitempty"`
	ByState    map[string]int `json:"by_state,omitempty"`
}

// GroupMember is one member of a group, by submission index.
type GroupMember struct {
	Index int    `json:"index"`
	ID    string `json:"id"`    // a task id, or a nested group's id; "" if never added
	State string `json:"state"` // the task's state as client.State names it; "group" for a nested group; "" unknown
	// Progress is what a task member's handler last reported (nil when
	// nothing, and for a nested group).
	Progress *Progress `json:"progress,omitempty"`
}

// GroupMembers reads the group id ("group:<home>/<id>"): its counters in
// one read, and, for a group of at most MaxGroupMembersListed members, its
// members with their states (one read of the member list, one pipeline of
// state reads).
func (i *Inspector) GroupMembers(ctx context.Context, id string) (GroupDetail, error) {
	g, err := store.ParseGroupRef(id)
	if err != nil {
		return GroupDetail{}, err
	}
	gs, err := store.ReadGroup(ctx, i.rdb, g)
	if err != nil {
		return GroupDetail{}, err
	}
	st := gs.State
	if st == "running" {
		st = "open"
	}
	d := GroupDetail{ID: id, State: st, Members: gs.Members, Succeeded: gs.Succeeded, Failed: gs.Failed, Limit: gs.Limit,
		First: gs.First, Parent: gs.Parent, Join: gs.Join, Created: msTime(gs.StartMs), Ended: msTime(gs.EndMs), Cancel: gs.Cancel}
	if gs.State == "" {
		return d, nil
	}
	if err := i.groupsWork(ctx, []store.GroupRef{g}, func(_ int, done, total int64, bad string) {
		d.WorkDone, d.WorkTotal, d.WorkError = done, total, bad
	}); err != nil {
		return GroupDetail{}, err
	}
	if gs.Members > MaxGroupMembersListed {
		return d, nil
	}
	names, err := store.GroupMemberNames(ctx, i.rdb, g, gs.Members)
	if err != nil {
		return GroupDetail{}, err
	}
	var ids []string
	var at []int
	d.MemberList = make([]GroupMember, len(names))
	for j, n := range names {
		d.MemberList[j] = GroupMember{Index: j, ID: n}
		switch {
		case keys.IsGroupID(n):
			d.MemberList[j].State = "group"
		case n != "":
			ids, at = append(ids, n), append(at, j)
		}
	}
	if len(ids) > 0 {
		ss, err := store.States(ctx, i.rdb, ids)
		if err != nil {
			return GroupDetail{}, fmt.Errorf("read the members of %s: %w", id, err)
		}
		for k, s := range ss {
			d.MemberList[at[k]].State = s.State
		}
		ps, err := store.TasksProgress(ctx, i.rdb, ids)
		if err != nil {
			return GroupDetail{}, fmt.Errorf("read the members of %s: %w", id, err)
		}
		for k, r := range ps {
			// A malformed report shows as none: the task's own view says why.
			d.MemberList[at[k]].Progress, _ = progressOf(r)
		}
	}
	d.Listed = true
	d.ByState = map[string]int{}
	for _, m := range d.MemberList {
		s := m.State
		if s == "" {
			s = "unknown"
		}
		d.ByState[s]++
	}
	return d, nil
}
