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
ENTRYPOINT ["/usr/local/bin/worker"]
