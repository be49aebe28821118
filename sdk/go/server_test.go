package ipush

// server_test.go: the client against a real ipush_server.

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func newTestClient(t *testing.T, base, uid string, r *recorder, o Options) *Client {
	t.Helper()
	if o.Password == "" && o.Token == nil {
		o.Password = "pw"
	}
	c, err := NewClient(base, uid, r.hook(o))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReceive: every transport and codec receives user and channel messages
// published through the admin API and sends through the stream (or /send).
func TestReceive(t *testing.T) {
	s := startServer(t, "memory")
	admin := s.adminClient(t)
	cases := []struct {
		tr    Transport
		codec Codec
	}{{WebSocket, JSON}, {SSE, JSON}, {Chunked, JSON}, {WebSocket, MsgPack}, {Chunked, MsgPack}}
	for _, tc := range cases {
		tc := tc
		t.Run(fmt.Sprintf("%s-%s", tc.tr, tc.codec), func(t *testing.T) {
			uid := fmt.Sprintf("recv-%s-%s", tc.tr, tc.codec)
			r := newRecorder()
			c := newTestClient(t, s.clientURL, uid, r, Options{Transports: []Transport{tc.tr}, Codec: tc.codec})
			runClient(t, c)
			evs := r.waitKind(t, "connected", 1, 10*time.Second)
			for _, e := range evs {
				if e.kind == "connected" && (e.conn.Transport != tc.tr || e.conn.URL != s.clientURL) {
					t.Fatalf("connected %+v, want %s at %s", e.conn, tc.tr, s.clientURL)
				}
			}
			ctx := ctxT(t)
			body := "héllo \"quoted\" \\ \n 🎉"
			if err := admin.Publish(ctx, uid, "op", body); err != nil {
				t.Fatal(err)
			}
			if err := c.Subscribe(ctx, "ch-"+uid); err != nil {
				t.Fatal(err)
			}
			// The subscription is stored when the server has read it; a
			// channel publish after it reaches us.
			waitMember(t, admin, uid, "ch-"+uid, r)
			if err := c.SendToChannel(ctx, "ch-"+uid, "to the channel"); err != nil {
				t.Fatal(err)
			}
			if err := c.SendToUser(ctx, uid, "to myself"); err != nil {
				t.Fatal(err)
			}
			if err := admin.Publish(ctx, uid, "op", "no seq", WithTTL(0)); err != nil {
				t.Fatal(err)
			}
			got := waitReal(t, r, 4, 10*time.Second)
			want := []Message{
				{Type: TypeUser, From: "op", To: uid, Body: body, Seq: 1, HasSeq: true},
				{Type: TypeChannel, From: uid, To: uid, Channel: "ch-" + uid, Body: "to the channel", Seq: 2, HasSeq: true},
				{Type: TypeUser, From: uid, To: uid, Body: "to myself", Seq: 3, HasSeq: true},
				{Type: TypeUser, From: "op", To: uid, Body: "no seq"},
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("messages:\n got %+v\nwant %+v", got, want)
			}
			if err := c.Unsubscribe(ctx, "ch-"+uid); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// waitMember publishes probe messages to the channel until one reaches the
// client: then the subscription is in place.
func waitMember(t *testing.T, admin *Admin, uid, cid string, r *recorder) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		probe := fmt.Sprintf("probe-%d", i)
		if err := admin.PublishChannel(ctxT(t), cid, "op", probe, WithTTL(0)); err != nil {
			t.Fatal(err)
		}
		wait := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(wait) {
			for _, m := range r.messages() {
				if strings.HasPrefix(m.Body, "probe-") {
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatalf("%s never became a member of %s", uid, cid)
}

func withoutProbes(msgs []Message) []Message {
	var out []Message
	for _, m := range msgs {
		if !strings.HasPrefix(m.Body, "probe-") {
			out = append(out, m)
		}
	}
	return out
}

// waitReal waits for n messages other than probes and returns them.
func waitReal(t *testing.T, r *recorder, n int, timeout time.Duration) []Message {
	t.Helper()
	r.waitFor(t, fmt.Sprintf("%d messages", n), timeout, func([]ev) bool {
		return len(withoutProbes(r.messages())) >= n
	})
	return withoutProbes(r.messages())
}
