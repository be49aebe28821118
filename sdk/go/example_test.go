package ipush_test

import (
	"context"
	"fmt"
	"log"
	"os/signal"
	"syscall"

	ipush "github.com/ipush/ipush/sdk/go"
)

// A client that prints what it receives, and an admin publish.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	client, err := ipush.NewClient("http://127.0.0.1:9000", "user001", ipush.Options{
		Password:   "pwd001",
		Transports: ipush.Fallback, // WebSocket, then SSE, then the chunked stream
		OnConnected: func(c ipush.Connected) {
			fmt.Println("connected over", c.Transport, "to", c.URL)
		},
		OnMessage: func(m ipush.Message) {
			fmt.Printf("seq %d from %s: %s\n", m.Seq, m.From, m.Body) // acked automatically
		},
		OnDisconnected: func(reason error) { fmt.Println("disconnected:", reason) },
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		admin, _ := ipush.NewAdmin("http://127.0.0.1:9001", nil)
		if err := admin.Publish(ctx, "user001", "op", "hello"); err != nil {
			log.Print(err)
		}
	}()
	if err := client.Run(ctx); err != nil && err != context.Canceled {
		log.Fatal(err)
	}
}
