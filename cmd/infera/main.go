// Command infera runs AI model inference services the serverless way on one machine, from
// Knative Service manifests. See the README and `infera --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/infera-dev/infera/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	stop()
	os.Exit(code)
}
