package ipush

// helpers_test.go: starting a real ipush_server on free ports, and recording
// a client's events.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the repository root, two levels above this package (go test
// runs in the package's directory).
func repoRoot(t testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

func inCI() bool { return os.Getenv("CI") == "true" }

// serverBinary is $IPUSH_SERVER (a relative path is taken from the repository
// root) or <repo>/target/debug/ipush_server. Missing:
// a failure in CI, "skipped" elsewhere.
func serverBinary(t testing.TB) string {
	p := os.Getenv("IPUSH_SERVER")
	if p == "" {
		p = filepath.Join(repoRoot(t), "target", "debug", "ipush_server")
	} else if !filepath.IsAbs(p) {
		p = filepath.Join(repoRoot(t), p) // relative to the repository root
	}
	if _, err := os.Stat(p); err != nil {
		if inCI() {
			t.Fatalf("ipush_server not found at %s (set IPUSH_SERVER): %v", p, err)
		}
		fmt.Printf("skipped: %s: ipush_server not found at %s (set IPUSH_SERVER)\n", t.Name(), p)
		t.Skip("ipush_server not found")
	}
	return p
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type server struct {
	t                   testing.TB
	bin                 string
	dir                 string
	client, admin, bus  int
	extra               []string
	cmd                 *exec.Cmd
	exited              chan struct{}
	log                 *syncBuffer
	mu                  sync.Mutex
	clientURL, adminURL string
	storage             string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer starts ipush_server on free ports with its own data dir;
// extra flags are appended. It is killed when the test ends.
func startServer(t testing.TB, storage string, extra ...string) *server {
	s := &server{t: t, bin: serverBinary(t), dir: t.TempDir(), storage: storage, extra: extra}
	var err error
	for try := 0; try < 4; try++ {
		s.client, s.admin, s.bus = freePort(t), freePort(t), freePort(t)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("ipush_server did not start: %v\n%s", err, s.log.String())
	}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("server :%d log:\n%s", s.client, tail(s.log.String(), 4000))
		}
	})
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (s *server) args() []string {
	a := []string{
		"--client_host=127.0.0.1",
		"--client_port=" + strconv.Itoa(s.client),
		"--admin_port=" + strconv.Itoa(s.admin),
		"--bus_port=" + strconv.Itoa(s.bus),
		"--cores=2",
		"--storage=" + s.storage,
		"--data_dir=" + filepath.Join(s.dir, "data"),
		"--pid_file=" + filepath.Join(s.dir, "ipush_server.pid"),
		"--log_level=warn",
	}
	return append(a, s.extra...)
}

// start runs the binary and waits until /health answers (or it exits).
func (s *server) start() error {
	s.clientURL = "http://127.0.0.1:" + strconv.Itoa(s.client)
	s.adminURL = "http://127.0.0.1:" + strconv.Itoa(s.admin)
	s.log = &syncBuffer{}
	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("exited: %s", tail(s.log.String(), 2000))
		default:
		}
		resp, err := hc.Get(s.adminURL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.kill()
	return fmt.Errorf("no /health within 20 s")
}

// stop sends SIGTERM and waits for the exit.
func (s *server) stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("ipush_server did not exit within 10 s of SIGTERM")
		cmd.Process.Kill()
		<-exited
	}
}

// restart starts the server again on the same ports and data dir (a port
// still held a moment is retried).
func (s *server) restart() {
	var err error
	for try := 0; try < 5; try++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.t.Fatalf("restart failed: %v", err)
}

func (s *server) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
	default:
		cmd.Process.Kill()
		<-exited
	}
}

func (s *server) adminClient(t testing.TB) *Admin {
	a, err := NewAdmin(s.adminURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// ev is one recorded client event.
type ev struct {
	kind string // message, connected, disconnected, error, moved, replaced
	msg  Message
	conn Connected
	err  error
	loc  string
}

type recorder struct {
	mu     sync.Mutex
	events []ev
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) add(e ev) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// hook fills o's callbacks.
func (r *recorder) hook(o Options) Options {
	o.OnMessage = func(m Message) { r.add(ev{kind: "message", msg: m}) }
	o.OnConnected = func(c Connected) { r.add(ev{kind: "connected", conn: c}) }
	o.OnDisconnected = func(err error) { r.add(ev{kind: "disconnected", err: err}) }
	o.OnError = func(err error) { r.add(ev{kind: "error", err: err}) }
	o.OnMoved = func(l string) { r.add(ev{kind: "moved", loc: l}) }
	o.OnReplaced = func() { r.add(ev{kind: "replaced"}) }
	return o
}

func (r *recorder) snapshot() []ev {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ev(nil), r.events...)
}

func (r *recorder) count(kind string) int {
	n := 0
	for _, e := range r.snapshot() {
		if e.kind == kind {
			n++
		}
	}
	return n
}

func (r *recorder) messages() []Message {
	var out []Message
	for _, e := range r.snapshot() {
		if e.kind == "message" {
			out = append(out, e.msg)
		}
	}
	return out
}

// waitFor waits until cond holds over the events so far.
func (r *recorder) waitFor(t testing.TB, what string, timeout time.Duration, cond func([]ev) bool) []ev {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		evs := r.snapshot()
		if cond(evs) {
			return evs
		}
		select {
		case <-r.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; events:\n%s", timeout, what, dump(r.snapshot()))
		}
	}
}

func (r *recorder) waitKind(t testing.TB, kind string, n int, timeout time.Duration) []ev {
	t.Helper()
	return r.waitFor(t, fmt.Sprintf("%d %s event(s)", n, kind), timeout, func(evs []ev) bool {
		c := 0
		for _, e := range evs {
			if e.kind == kind {
				c++
			}
		}
		return c >= n
	})
}

func (r *recorder) waitMessages(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	r.waitKind(t, "message", n, timeout)
	return r.messages()
}

func dump(evs []ev) string {
	var b strings.Builder
	for _, e := range evs {
		switch e.kind {
		case "message":
			j, _ := e.msg.AppendJSON(nil)
			fmt.Fprintf(&b, "  message %s\n", j)
		case "connected":
			fmt.Fprintf(&b, "  connected %s %s\n", e.conn.Transport, e.conn.URL)
		case "moved":
			fmt.Fprintf(&b, "  moved %s\n", e.loc)
		default:
			fmt.Fprintf(&b, "  %s %v\n", e.kind, e.err)
		}
	}
	return b.String()
}

// runner is a client's Run in the background.
type runner struct {
	done chan struct{}
	err  error
}

// wait waits for Run to return and gives its result.
func (r *runner) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(timeout):
		t.Fatalf("Run did not return within %v", timeout)
		return nil
	}
}

// runClient starts c.Run and stops it when the test ends.
func runClient(t testing.TB, c *Client) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{done: make(chan struct{})}
	go func() { r.err = c.Run(ctx); close(r.done) }()
	t.Cleanup(func() {
		c.Close()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5 s of Close")
		}
		cancel()
	})
	return r
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// seqs lists the seqs of msgs.
func seqs(msgs []Message) []uint64 {
	out := make([]uint64, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, m.Seq)
	}
	return out
}
