"""`genpref push RUN --repo ID`: refresh the run's model card, then upload final/ (weights, card, sample
pictures) to a Hugging Face Hub model repository through huggingface_hub. The token is huggingface_hub's
own (`hf auth login` or HF_TOKEN); nothing here reads or stores it."""

from __future__ import annotations

from pathlib import Path

from genpref.errors import UserError
from genpref.modelcard import write_model_card


def push_run(run_dir: str | Path, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    """Upload <run>/final to `repo_id` (created when missing); returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    run_dir = Path(run_dir)
    final = run_dir / "final"
    if not run_dir.exists():
        raise UserError(f"{run_dir}: not found; expected a run directory (a train.output_dir)")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory: it has no config.yaml (a run's train.output_dir has one)")
    if not final.is_dir():
        raise UserError(f"{final} does not exist — did the run finish? (resume it with train.resume=latest)")
    write_model_card(run_dir)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(final), repo_id=repo_id, repo_type="model", revision=revision,
                                   commit_message=f"genpref push {run_dir.name}")
    except OfflineModeIsEnabled:
        raise UserError("push: HF_HUB_OFFLINE is set; unset it to reach the Hub") from None
    except HfHubHTTPError as err:
        raise UserError(f"push to {repo_id}: {str(err).splitlines()[0]}") from None
    return getattr(commit, "commit_url", None) or str(commit)
