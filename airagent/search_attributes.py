"""The search attributes a train keeps up to date, so the Web UI and `temporal workflow list` can filter."""

from temporalio.common import SearchAttributeKey

PIPELINE = SearchAttributeKey.for_keyword("AiragentPipeline")
STAGE = SearchAttributeKey.for_keyword("AiragentStage")
STATE = SearchAttributeKey.for_keyword("AiragentState")
GIT_SHA = SearchAttributeKey.for_keyword("AiragentGitSha")
ENVIRONMENT = SearchAttributeKey.for_keyword("AiragentEnvironment")

ALL = (PIPELINE, STAGE, STATE, GIT_SHA, ENVIRONMENT)
