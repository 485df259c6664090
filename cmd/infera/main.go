// Command infera runs AI model inference services the serverless way on one machine, from
// Knative Service manifests. See the README and `infera --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/infera-dev/infera/internal/cli"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel() // first signal: stop gracefully
		<-sigs
		fmt.Fprintln(os.Stderr, "infera: second signal: exiting now")
		os.Exit(130)
	}()
	code := cli.Main(ctx, os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	cancel()
	os.Exit(code)
}
