"""Errors that the stages report as one line and a non-zero exit."""


class PipelineError(Exception):
    """A problem the user can fix: bad params, missing or corrupt data, a failed run."""


class ParamsError(PipelineError):
    """params.yaml is unreadable or breaks the declared schema."""


class FetchError(PipelineError):
    """No source could provide a verified copy of a data file."""


class IdxFormatError(PipelineError):
    """A file is not a well-formed IDX file of the expected kind."""
