"""Validation as a library, below the `validate` stage: the parser that runs inside a release runtime
(`parser`, shipped as one zipapp by `parser_app`), its warm service and cache (`service`, `cache`), the
parse of a release (`parse`), the Kubernetes validator Job (`job`), and the review of a report (`policies`,
`review`)."""
