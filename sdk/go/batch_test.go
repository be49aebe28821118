package ipush

// batch_test.go: PublishBatch against a real server (results and delivery in
// order, the split into requests, idempotency_key passed, checks before
// sending) and its pure line cutting.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingTransport counts the requests that go through it.
type countingTransport struct{ n atomic.Int32 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

func wantAPIError(t *testing.T, err error, status int, reason string) {
	t.Helper()
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Reason != reason {
		t.Fatalf("error %v, want %d %q", err, status, reason)
	}
}

func TestPublishBatchMixedInOrder(t *testing.T) {
	s := startServer(t, "memory")
	a := s.adminClient(t)
	ctx := ctxT(t)
	if err := a.Sub(ctx, "bxa", "bxc"); err != nil {
		t.Fatal(err)
	}
	ra := newTestRecorderClient(t, s.clientURL, "bxa", Options{Transports: []Transport{WebSocket}})
	rb := newTestRecorderClient(t, s.clientURL, "bxb", Options{Transports: []Transport{WebSocket}})
	ra.waitKind(t, "connected", 1, 10*time.Second)
	rb.waitKind(t, "connected", 1, 10*time.Second)
	res, err := a.PublishBatch(ctx, []BatchItem{
		{To: "bxa", From: "op", Body: "one"},
		{To: "bxb", From: "op", Body: "for b", Opts: []PublishOption{WithTTL(time.Minute)}},
		{Channel: "bxc", From: "op", Body: "two"},
		{To: "bad uid", From: "op", Body: "x"},
		{To: "bxa", From: "op", Body: "three", Opts: []PublishOption{WithIdempotencyKey("batch:1")}},
	})
	if err != nil || len(res) != 5 {
		t.Fatalf("PublishBatch: %v %v", res, err)
	}
	for i, r := range res {
		if (r.Err == nil) != (i != 3) {
			t.Fatalf("item %d: %v", i, r.Err)
		}
	}
	wantAPIError(t, res[3].Err, 400, "invalid to")
	msgs := ra.waitMessages(t, 3, 10*time.Second)
	var got []string
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%s/%d/%d", m.Body, m.Type, m.Seq))
	}
	if want := []string{"one/3/1", "two/4/2", "three/3/3"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("bxa got %v, want %v", got, want)
	}
	if m := rb.waitMessages(t, 1, 10*time.Second); m[0].Body != "for b" {
		t.Fatalf("bxb got %+v", m)
	}
}

func TestPublishBatchSplitKeepsOrder(t *testing.T) {
	s := startServer(t, "memory")
	ct := &countingTransport{}
	a, err := NewAdmin(s.adminURL, &http.Client{Transport: ct})
	if err != nil {
		t.Fatal(err)
	}
	a.MaxBatchLines = 3
	ctx := ctxT(t)
	r := newTestRecorderClient(t, s.clientURL, "bsp", Options{Transports: []Transport{WebSocket}})
	r.waitKind(t, "connected", 1, 10*time.Second)
	var items []BatchItem
	for i := 0; i < 8; i++ {
		items = append(items, BatchItem{To: "bsp", From: "op", Body: fmt.Sprintf("m%d", i)})
	}
	res, err := a.PublishBatch(ctx, items)
	if err != nil || len(res) != 8 {
		t.Fatalf("PublishBatch: %v %v", res, err)
	}
	for i, x := range res {
		if x.Err != nil {
			t.Fatalf("item %d: %v", i, x.Err)
		}
	}
	if n := ct.n.Load(); n != 3 {
		t.Fatalf("%d requests for 8 items of at most 3, want 3", n)
	}
	for i, m := range r.waitMessages(t, 8, 10*time.Second) {
		if m.Body != fmt.Sprintf("m%d", i) || m.Seq != uint64(i+1) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	if res, err := a.PublishBatch(ctx, nil); err != nil || len(res) != 0 || ct.n.Load() != 3 {
		t.Fatalf("empty batch: %v %v (%d requests)", res, err, ct.n.Load())
	}
}

func TestPublishBatchIdempotencyKeyAndChecks(t *testing.T) {
	s := startServer(t, "memory")
	a := s.adminClient(t)
	ctx := ctxT(t)
	res, err := a.PublishBatch(ctx, []BatchItem{
		{To: "bik", From: "op", Body: "keyed", Opts: []PublishOption{WithIdempotencyKey("order-17:a")}},
		// The server checks a key it is given (1-128 of A-Z a-z 0-9 _ . : -): proof it is sent.
		{To: "bik", From: "op", Body: "bad key", Opts: []PublishOption{WithIdempotencyKey("not a key")}},
	})
	if err != nil || len(res) != 2 || res[0].Err != nil {
		t.Fatalf("PublishBatch: %v %v", res, err)
	}
	var ae *APIError
	if !errors.As(res[1].Err, &ae) || ae.Status != 400 || !strings.HasPrefix(ae.Reason, "invalid idempotency_key") {
		t.Fatalf("error %v, want 400 invalid idempotency_key…", res[1].Err)
	}
	for _, bad := range [][]BatchItem{
		{{To: "bik", From: "op", Body: "never sent"}, {To: "bik", From: "op", Body: "x", Opts: []PublishOption{WithTTL(-time.Second)}}},
		{{From: "op", Body: "x"}},
		{{To: "bik", Channel: "c", From: "op", Body: "x"}},
		{{To: "bik", From: "op", Body: "\xff"}},
		{{To: "bik", From: "op", Body: "x", Opts: []PublishOption{WithIdempotencyKey("")}}},
	} {
		if res, err := a.PublishBatch(ctx, bad); err == nil {
			t.Fatalf("%+v accepted: %v", bad, res)
		}
	}
	msgs, err := a.Msg(ctx, "bik")
	if err != nil || len(msgs) != 1 || msgs[0].Body != "keyed" {
		t.Fatalf("stored: %+v %v", msgs, err)
	}
}

func TestPublishBatchFailedRequestFailsLaterItems(t *testing.T) {
	a, err := NewAdmin(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.MaxBatchLines = 1
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := a.PublishBatch(ctx, []BatchItem{{To: "u", From: "op", Body: "a"}, {To: "u", From: "op", Body: "b"}})
	if err != nil || len(res) != 2 || res[0].Err == nil || res[1].Err != res[0].Err {
		t.Fatalf("against nothing: %+v %v", res, err)
	}
}

func TestBatchRuns(t *testing.T) {
	l := func(s string) []byte { return []byte(s) }
	lines := [][]byte{l("aaaa"), l("bb"), l("cccccccc"), l("d"), l("e")}
	sizes := func(runs [][][]byte) []int {
		var n []int
		for _, r := range runs {
			n = append(n, len(r))
		}
		return n
	}
	for _, tc := range []struct {
		maxLines, maxBytes int
		want               []int
	}{
		{10, 100, []int{5}},
		{2, 100, []int{2, 2, 1}},
		{10, 6, []int{2, 1, 2}}, // the 8-byte line goes alone
		{1, 1, []int{1, 1, 1, 1, 1}},
	} {
		if got := sizes(batchRuns(lines, tc.maxLines, tc.maxBytes)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("batchRuns(%d, %d) = %v, want %v", tc.maxLines, tc.maxBytes, got, tc.want)
		}
	}
	if runs := batchRuns(nil, 3, 3); len(runs) != 0 {
		t.Errorf("no lines: %v", runs)
	}
}
