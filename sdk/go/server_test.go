package ipush

// server_test.go: the client against a real ipush_server.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
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
			waitReal(t, r, 2, 10*time.Second)
			if err := c.SendToUser(ctx, uid, "to myself"); err != nil {
				t.Fatal(err)
			}
			// A send on the stream is processed after the write returns: wait for
			// it before publishing the next message through the admin port.
			waitReal(t, r, 3, 10*time.Second)
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

// waitMsg polls /msg until it lists exactly the seqs want.
func waitMsg(t *testing.T, admin *Admin, uid string, want []uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got []uint64
	for time.Now().Before(deadline) {
		msgs, err := admin.Msg(ctxT(t), uid)
		if err != nil {
			t.Fatal(err)
		}
		got = seqs(msgs)
		if reflect.DeepEqual(got, want) {
			return
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("/msg?uid=%s: seqs %v, want %v", uid, got, want)
}

func publishN(t *testing.T, admin *Admin, uid string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := admin.Publish(ctxT(t), uid, "op", fmt.Sprintf("m%d", i)); err != nil {
			t.Fatalf("publish m%d: %v", i, err)
		}
	}
}

// TestAck: automatic acks (batched by count and by time) and manual acks
// empty /msg of the acked seqs, on every transport.
func TestAck(t *testing.T) {
	s := startServer(t, "memory")
	admin := s.adminClient(t)
	for _, tr := range []Transport{WebSocket, SSE, Chunked} {
		tr := tr
		t.Run("auto-"+string(tr), func(t *testing.T) {
			uid := "ack-auto-" + string(tr)
			r := newRecorder()
			// 7 messages, a batch of 5: one ack by count (seq 5), one by time (7).
			c := newTestClient(t, s.clientURL, uid, r, Options{Transports: []Transport{tr},
				AckEvery: 5, AckInterval: 150 * time.Millisecond})
			runClient(t, c)
			r.waitKind(t, "connected", 1, 10*time.Second)
			publishN(t, admin, uid, 1, 7)
			r.waitMessages(t, 7, 10*time.Second)
			waitMsg(t, admin, uid, []uint64{})
		})
		t.Run("manual-"+string(tr), func(t *testing.T) {
			uid := "ack-manual-" + string(tr)
			r := newRecorder()
			c := newTestClient(t, s.clientURL, uid, r, Options{Transports: []Transport{tr}, ManualAck: true})
			runClient(t, c)
			r.waitKind(t, "connected", 1, 10*time.Second)
			publishN(t, admin, uid, 1, 5)
			r.waitMessages(t, 5, 10*time.Second)
			waitMsg(t, admin, uid, []uint64{1, 2, 3, 4, 5})
			if err := c.Ack(ctxT(t), 3); err != nil {
				t.Fatal(err)
			}
			waitMsg(t, admin, uid, []uint64{4, 5})
			if err := c.Ack(ctxT(t), 5); err != nil {
				t.Fatal(err)
			}
			waitMsg(t, admin, uid, []uint64{})
		})
	}
}

// TestResumeAfterRestart: the server stops (SIGTERM) and restarts on the same
// data; messages are published while the client is away and after it is
// back; the application sees each exactly once, in seq order, though the
// server replays the unacked ones it had already delivered.
func TestResumeAfterRestart(t *testing.T) {
	for _, tr := range []Transport{WebSocket, SSE, Chunked} {
		tr := tr
		t.Run(string(tr), func(t *testing.T) {
			s := startServer(t, "embedded")
			admin := s.adminClient(t)
			uid := "resume-" + string(tr)
			gate := make(chan struct{})
			var calls int32
			var mu sync.Mutex
			token := func(ctx context.Context) (string, error) {
				mu.Lock()
				calls++
				n := calls
				mu.Unlock()
				if n > 1 {
					select { // hold the reconnect until the test opens the gate
					case <-gate:
					case <-ctx.Done():
						return "", ctx.Err()
					}
				}
				return "pw", nil
			}
			r := newTestRecorderClient(t, s.clientURL, uid, Options{Transports: []Transport{tr}, Token: token,
				ManualAck: true, BackoffBase: 20 * time.Millisecond, BackoffCap: 100 * time.Millisecond})
			r.waitKind(t, "connected", 1, 10*time.Second)
			publishN(t, admin, uid, 1, 5)
			r.waitMessages(t, 5, 10*time.Second)
			if err := r.client.Ack(ctxT(t), 3); err != nil {
				t.Fatal(err)
			}
			waitMsg(t, admin, uid, []uint64{4, 5})

			s.stop()
			r.waitKind(t, "disconnected", 1, 10*time.Second)
			s.restart()
			publishN(t, admin, uid, 6, 8) // while the client is disconnected
			if tr != SSE {
				waitMsg(t, admin, uid, []uint64{4, 5, 6, 7, 8}) // 4, 5 will be replayed
			}
			close(gate)
			r.waitKind(t, "connected", 2, 15*time.Second)
			publishN(t, admin, uid, 9, 10)
			r.waitMessages(t, 10, 10*time.Second)
			time.Sleep(200 * time.Millisecond) // a duplicate would arrive right behind
			msgs := r.messages()
			want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
			if got := seqs(msgs); !reflect.DeepEqual(got, want) {
				t.Fatalf("seqs delivered: %v, want %v", got, want)
			}
			for i, m := range msgs {
				if m.Body != fmt.Sprintf("m%d", i+1) {
					t.Fatalf("message %d: body %q", i+1, m.Body)
				}
			}
			if r.client.LastSeq() != 10 {
				t.Fatalf("LastSeq %d", r.client.LastSeq())
			}
		})
	}
}

// recClient is a running client with its recorder.
type recClient struct {
	*recorder
	client *Client
	run    *runner
}

func newTestRecorderClient(t *testing.T, base, uid string, o Options) *recClient {
	t.Helper()
	r := newRecorder()
	c := newTestClient(t, base, uid, r, o)
	return &recClient{recorder: r, client: c, run: runClient(t, c)}
}

// startCluster starts a 2-node static cluster on free ports.
func startCluster(t *testing.T) (n1, n2 *server) {
	t.Helper()
	for try := 0; ; try++ {
		p := make([]int, 6)
		for i := range p {
			p[i] = freePort(t)
		}
		nodes := fmt.Sprintf("--nodes=n1=127.0.0.1:%d:%d:%d,n2=127.0.0.1:%d:%d:%d", p[0], p[1], p[2], p[3], p[4], p[5])
		n1 = &server{t: t, bin: serverBinary(t), dir: t.TempDir(), storage: "memory",
			client: p[0], admin: p[1], bus: p[2], extra: []string{"--node=n1", nodes}}
		n2 = &server{t: t, bin: serverBinary(t), dir: t.TempDir(), storage: "memory",
			client: p[3], admin: p[4], bus: p[5], extra: []string{"--node=n2", nodes}}
		t.Cleanup(n1.kill)
		t.Cleanup(n2.kill)
		err := n1.start()
		if err == nil {
			err = n2.start()
		}
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("n1 log:\n%s\nn2 log:\n%s", tail(n1.log.String(), 3000), tail(n2.log.String(), 3000))
				}
			})
			break
		}
		n1.kill()
		n2.kill()
		if try == 3 {
			t.Fatalf("cluster did not start: %v", err)
		}
	}
	// Wait until each node sees the other.
	for _, n := range []*server{n1, n2} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			h, err := n.adminClient(t).Health(ctxT(t))
			if err == nil && len(h.Peers) == 1 && func() bool {
				for _, st := range h.Peers {
					return st == "up"
				}
				return false
			}() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("peer never up: %+v %v", h, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return n1, n2
}

// TestFollow303: a uid owned by n2, connected through n1, is redirected to n2
// on every transport and receives what is published through n1.
func TestFollow303(t *testing.T) {
	n1, n2 := startCluster(t)
	admin1 := n1.adminClient(t)
	n2addr := fmt.Sprintf("127.0.0.1:%d", n2.client)
	var uids []string
	for i := 0; len(uids) < 3 && i < 1000; i++ {
		uid := fmt.Sprintf("redir-%d", i)
		owner, err := admin1.Shard(ctxT(t), uid)
		if err != nil {
			t.Fatal(err)
		}
		if owner == n2addr {
			uids = append(uids, uid)
		}
	}
	if len(uids) < 3 {
		t.Fatalf("no uid owned by n2 (%s) among 1000", n2addr)
	}
	for i, tr := range []Transport{WebSocket, SSE, Chunked} {
		uid := uids[i]
		t.Run(string(tr), func(t *testing.T) {
			r := newTestRecorderClient(t, n1.clientURL, uid, Options{Transports: []Transport{tr}})
			evs := r.waitKind(t, "connected", 1, 10*time.Second)
			for _, e := range evs {
				if e.kind == "connected" && e.conn.URL != n2.clientURL {
					t.Fatalf("connected to %s, want n2 %s", e.conn.URL, n2.clientURL)
				}
			}
			if err := admin1.Publish(ctxT(t), uid, "op", "via n1"); err != nil {
				t.Fatal(err)
			}
			msgs := r.waitMessages(t, 1, 10*time.Second)
			if msgs[0].Body != "via n1" || msgs[0].Seq != 1 {
				t.Fatalf("got %+v", msgs[0])
			}
		})
	}
	st, err := admin1.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.RedirectNumber < 3 {
		t.Fatalf("n1 redirect_number %d, want >= 3", st.RedirectNumber)
	}
}

// TestMoved: a stream told to move (asked through n1, held by n2, sent to n1,
// which redirects back to n2, the owner) reconnects to the location at once,
// not after its minute-long backoff, and resumes: nothing lost, nothing twice.
func TestMoved(t *testing.T) {
	n1, n2 := startCluster(t)
	admin1 := n1.adminClient(t)
	n2addr := fmt.Sprintf("127.0.0.1:%d", n2.client)
	cases := []struct {
		tr    Transport
		codec Codec
	}{{WebSocket, JSON}, {WebSocket, MsgPack}, {SSE, JSON}, {Chunked, MsgPack}}
	next := 0
	for _, tc := range cases {
		var uid string
		for ; uid == "" && next < 1000; next++ {
			u := fmt.Sprintf("mover-%d", next)
			owner, err := admin1.Shard(ctxT(t), u)
			if err != nil {
				t.Fatal(err)
			}
			if owner == n2addr {
				uid = u
			}
		}
		if uid == "" {
			t.Fatalf("no uid owned by n2 (%s)", n2addr)
		}
		t.Run(string(tc.tr)+"-"+string(tc.codec), func(t *testing.T) {
			r := newTestRecorderClient(t, n1.clientURL, uid, Options{
				Transports:  []Transport{tc.tr},
				Codec:       tc.codec,
				BackoffBase: time.Minute,
				BackoffCap:  time.Minute,
			})
			r.waitKind(t, "connected", 1, 10*time.Second)
			if err := admin1.Publish(ctxT(t), uid, "op", "before the move"); err != nil {
				t.Fatal(err)
			}
			r.waitMessages(t, 1, 10*time.Second)
			if err := admin1.Move(ctxT(t), uid, n1.clientURL); err != nil {
				t.Fatal(err)
			}
			if err := admin1.Publish(ctxT(t), uid, "op", "after the move"); err != nil {
				t.Fatal(err)
			}
			evs := r.waitKind(t, "connected", 2, 10*time.Second)
			if err := admin1.Publish(ctxT(t), uid, "op", "live again"); err != nil {
				t.Fatal(err)
			}
			msgs := r.waitMessages(t, 3, 10*time.Second)
			want := []string{"before the move", "after the move", "live again"}
			if len(msgs) != 3 {
				t.Fatalf("got %d messages, want 3", len(msgs))
			}
			for i, m := range msgs {
				if m.Body != want[i] || m.Seq != uint64(i+1) {
					t.Fatalf("message %d: %+v, want %q seq %d", i, m, want[i], i+1)
				}
			}
			var moved []string
			var conns []Connected
			for _, e := range evs {
				switch e.kind {
				case "moved":
					moved = append(moved, e.loc)
				case "connected":
					conns = append(conns, e.conn)
				}
			}
			if wantLoc := n1.clientURL + "/connect?uid=" + uid; len(moved) != 1 || moved[0] != wantLoc {
				t.Fatalf("moved events %v, want [%s]", moved, wantLoc)
			}
			if len(conns) != 2 || conns[1].URL != n2.clientURL {
				t.Fatalf("connections %+v, want the second on n2 %s", conns, n2.clientURL)
			}
		})
	}
}

// TestReplaced: a second connection of the uid replaces the first, which
// reports it and stops instead of fighting back.
func TestReplaced(t *testing.T) {
	s := startServer(t, "memory")
	for _, tr := range []Transport{WebSocket, SSE, Chunked} {
		tr := tr
		t.Run(string(tr), func(t *testing.T) {
			uid := "replaced-" + string(tr)
			first := newTestRecorderClient(t, s.clientURL, uid, Options{Transports: []Transport{tr}})
			first.waitKind(t, "connected", 1, 10*time.Second)
			second := newTestRecorderClient(t, s.clientURL, uid, Options{Transports: []Transport{tr}})
			second.waitKind(t, "connected", 1, 10*time.Second)
			if err := first.run.wait(t, 10*time.Second); err != ErrReplaced {
				t.Fatalf("first Run returned %v, want ErrReplaced", err)
			}
			if first.count("replaced") != 1 || first.count("connected") != 1 {
				t.Fatalf("first client events:\n%s", dump(first.snapshot()))
			}
			if err := s.adminClient(t).Publish(ctxT(t), uid, "op", "to the second"); err != nil {
				t.Fatal(err)
			}
			if m := second.waitMessages(t, 1, 10*time.Second); m[0].Body != "to the second" {
				t.Fatalf("second got %+v", m)
			}
			if second.count("connected") != 1 || second.count("disconnected") != 0 {
				t.Fatalf("second client events:\n%s", dump(second.snapshot()))
			}
		})
	}
}

// jwtHS256 mints a token with sub and exp.
func jwtHS256(secret, sub string, exp time.Time) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body := enc.EncodeToString([]byte(fmt.Sprintf(`{"sub":%q,"exp":%d}`, sub, exp.Unix())))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(head + "." + body))
	return head + "." + body + "." + enc.EncodeToString(mac.Sum(nil))
}

// TestJWTRefresh: with --auth=jwt the token callback is called before every
// connect; a refused token is retried with a fresh one; a bad static
// password is a final error.
func TestJWTRefresh(t *testing.T) {
	const secret = "test-secret"
	s := startServer(t, "memory", "--auth=jwt", "--auth_secret="+secret)
	admin := s.adminClient(t)
	for _, tr := range []Transport{WebSocket, SSE, Chunked} {
		tr := tr
		t.Run(string(tr), func(t *testing.T) {
			uid := "jwt-" + string(tr)
			var mu sync.Mutex
			calls := 0
			token := func(context.Context) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if calls == 1 {
					return jwtHS256("wrong-secret", uid, time.Now().Add(time.Minute)), nil
				}
				return jwtHS256(secret, uid, time.Now().Add(time.Minute)), nil
			}
			r := newTestRecorderClient(t, s.clientURL, uid, Options{Transports: []Transport{tr}, Token: token,
				BackoffBase: 10 * time.Millisecond, BackoffCap: 50 * time.Millisecond})
			r.waitKind(t, "connected", 1, 10*time.Second)
			var ae *APIError
			if evs := r.snapshot(); evs[0].kind != "error" || !errors.As(evs[0].err, &ae) || ae.Status != 401 {
				t.Fatalf("first event %s %v, want a 401 error", evs[0].kind, evs[0].err)
			}
			if err := admin.Publish(ctxT(t), uid, "op", "one"); err != nil {
				t.Fatal(err)
			}
			r.waitMessages(t, 1, 10*time.Second)
			// The server ends the stream: the client reconnects with a fresh token.
			if err := admin.Disconnect(ctxT(t), uid); err != nil {
				t.Fatal(err)
			}
			r.waitKind(t, "connected", 2, 10*time.Second)
			mu.Lock()
			n := calls
			mu.Unlock()
			if n != 3 {
				t.Fatalf("token callback called %d times, want 3", n)
			}
			if err := admin.Publish(ctxT(t), uid, "op", "two"); err != nil {
				t.Fatal(err)
			}
			if msgs := r.waitMessages(t, 2, 10*time.Second); msgs[1].Body != "two" {
				t.Fatalf("got %+v", msgs)
			}
		})
	}
	t.Run("bad-password", func(t *testing.T) {
		r := newTestRecorderClient(t, s.clientURL, "jwt-static", Options{Password: "not-a-jwt"})
		err := r.run.wait(t, 10*time.Second)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != 401 || ae.Reason != "auth failed" {
			t.Fatalf("Run returned %v, want APIError 401 auth failed", err)
		}
	})
}

// TestHeartbeatKeepsAlive: against the real server, the client's heartbeats
// are answered and a quiet stream stays up.
func TestHeartbeatKeepsAlive(t *testing.T) {
	for _, tr := range []Transport{WebSocket, Chunked} {
		tr := tr
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			s := startServer(t, "memory") // its own: /stats counts this client's heartbeats only
			uid := "hb-" + string(tr)
			r := newTestRecorderClient(t, s.clientURL, uid, Options{Transports: []Transport{tr}, HeartbeatInterval: 400 * time.Millisecond})
			r.waitKind(t, "connected", 1, 10*time.Second)
			start, _ := s.adminClient(t).Stats(ctxT(t))
			time.Sleep(2 * time.Second) // 5 intervals: a dead stream would be dropped after 3
			st, err := s.adminClient(t).Stats(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if r.count("disconnected") != 0 || r.count("connected") != 1 {
				t.Fatalf("events:\n%s", dump(r.snapshot()))
			}
			if st.RecvType.Hb < start.RecvType.Hb+3 {
				t.Fatalf("server counted %d heartbeats, want >= 3 more than %d", st.RecvType.Hb, start.RecvType.Hb)
			}
		})
	}
}

// TestAdmin: every admin call, and the typed error.
func TestAdmin(t *testing.T) {
	s := startServer(t, "memory")
	a := s.adminClient(t)
	ctx := ctxT(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Publish(ctx, "adm1", "op", "first", WithTTL(time.Hour), WithIdempotencyKey("k-1")))
	must(a.Publish(ctx, "adm1", "op", "live only", WithTTL(0)))
	must(a.Sub(ctx, "adm1", "news"))
	must(a.PublishChannel(ctx, "news", "editor", "extra!", WithIdempotencyKey("k-2")))
	msgs, err := a.Msg(ctx, "adm1")
	must(err)
	want := []Message{
		{Type: TypeUser, From: "op", To: "adm1", Body: "first", Seq: 1, HasSeq: true},
		{Type: TypeChannel, From: "editor", To: "adm1", Channel: "news", Body: "extra!", Seq: 2, HasSeq: true},
	}
	if !reflect.DeepEqual(msgs, want) {
		t.Fatalf("Msg: %+v, want %+v", msgs, want)
	}
	must(a.Unsub(ctx, "adm1", "news"))
	must(a.PublishChannel(ctx, "news", "editor", "not for adm1"))
	if msgs, err := a.Msg(ctx, "adm1"); err != nil || len(msgs) != 2 {
		t.Fatalf("after unsub: %+v %v", msgs, err)
	}
	shard, err := a.Shard(ctx, "adm1")
	must(err)
	if shard != fmt.Sprintf("127.0.0.1:%d", s.client) {
		t.Fatalf("Shard: %q", shard)
	}
	h, err := a.Health(ctx)
	must(err)
	if h.Status != "ok" || h.Cores != 2 {
		t.Fatalf("Health: %+v", h)
	}
	st, err := a.Stats(ctx)
	must(err)
	if st.Request["Pub"] < 4 || st.Request["Msg"] < 2 || st.ServerStartTimestamp == 0 || len(st.Raw) == 0 {
		t.Fatalf("Stats: %+v", st)
	}

	// Disconnect: a connected user's stream ends; an absent one is a 404.
	r := newTestRecorderClient(t, s.clientURL, "adm2", Options{Transports: []Transport{Chunked}})
	r.waitKind(t, "connected", 1, 10*time.Second)
	must(a.Disconnect(ctx, "adm2"))
	evs := r.waitKind(t, "disconnected", 1, 10*time.Second)
	for _, e := range evs {
		var se *StreamError
		if e.kind == "disconnected" && (!errors.As(e.err, &se) || se.Reason != "disconnected") {
			t.Fatalf("disconnect reason %v", e.err)
		}
	}

	// Errors carry status and reason.
	for _, tc := range []struct {
		call   func() error
		status int
		reason string
	}{
		{func() error { return a.Publish(ctx, "", "op", "x") }, 400, "invalid to"},
		{func() error { _, err := a.Msg(ctx, ""); return err }, 400, ""},
		{func() error { return a.Disconnect(ctx, "nobody-here") }, 404, ""},
	} {
		err := tc.call()
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != tc.status || (tc.reason != "" && ae.Reason != tc.reason) || ae.Reason == "" {
			t.Fatalf("error %v, want status %d reason %q", err, tc.status, tc.reason)
		}
	}
	if err := a.Publish(ctx, "adm1", "op", "x", WithTTL(-time.Second)); err == nil {
		t.Fatal("negative ttl accepted")
	}
	if _, err := NewAdmin("localhost:9001", nil); err == nil {
		t.Fatal("admin URL without scheme accepted")
	}
}
