"""The search attributes trains and previews keep up to date, so the Web UI and `temporal workflow list` can filter."""

from temporalio.common import SearchAttributeKey

PIPELINE = SearchAttributeKey.for_keyword("AiragentPipeline")
STAGE = SearchAttributeKey.for_keyword("AiragentStage")
STATE = SearchAttributeKey.for_keyword("AiragentState")
GIT_SHA = SearchAttributeKey.for_keyword("AiragentGitSha")
ENVIRONMENT = SearchAttributeKey.for_keyword("AiragentEnvironment")
# A preview's branch (`preview/<pipeline>/<branch>`), so the Web UI lists previews by branch.
BRANCH = SearchAttributeKey.for_keyword("AiragentBranch")

ALL = (PIPELINE, STAGE, STATE, GIT_SHA, ENVIRONMENT, BRANCH)
