# The fleet's binaries: the worker (cmd/worker) and the upload producer
# (examples/uploads). Build: docker build -t async .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/worker ./cmd/worker \
 && CGO_ENABLED=0 go build -trimpath -o /out/uploads ./examples/uploads

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/worker /out/uploads /usr/local/bin/
USER nonroot
# /healthz, /readyz and /metrics; the health check asks /healthz on it
# with the binary itself (distroless has no curl or shell).
ENV HTTP_ADDR=:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/worker", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/worker"]
