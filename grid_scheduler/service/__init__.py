"""The gRPC shell: servicers, proto<->model conversion, validation, errors, the server."""
