"""One RecBole 1.2.1 run (a sequential model on one leave-one-out data set), written as JSON.

Runs inside ``bench/.venv-recbole`` (made by ``bench/recbole_peers.py``), not in the project
venv. The data set must already be in RecBole's atomic format at
``<data-path>/<dataset>/<dataset>.inter`` (``bench/_loo_data.py: write_atomic``).

    bench/.venv-recbole/bin/python bench/_recbole_runner.py --dataset taobao --model SASRec \\
        --data-path bench/.data/recbole --out bench/.data/runs/taobao-SASRec.json [--epochs 50]

Protocol: CE loss over all items (no negative sampling), leave-one-out by time (last
interaction = test, the one before = validation), full ranking, early stopping on
validation NDCG@10 (stopping_step 3), test metrics of the best-validation model.

The best model's test ranking is scored three ways (`masked_test`), training untouched:

- ``unmasked``: every item is a candidate (RecBole's own evaluator gives ``test``; this is
  the same ranking re-scored here, as a check of the rank rule);
- ``masked``: every item of the user's history before the test target (training and
  validation interactions, all of them, not only the last 50 the model reads) is set to
  −inf, the target included: a target the user had seen before (a repeat) becomes
  unreachable and counts as a miss. This is what a recommender of unseen items only gets;
- ``masked_target_kept``: the same, except that the target itself is never masked (the
  convention of ``ebbtide.evaluate.metrics.rank_of_targets`` and of the popularity_unseen
  baseline). It uses the answer to decide what to mask, so it is an upper bound, not a
  deployable ranking.

Each is also given on the users whose test target is not in their history (``new_target``),
where ``masked`` and ``masked_target_kept`` coincide. Ties count against the model.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

PROCESS_START = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

# torch >= 2.6 loads with weights_only=True by default; RecBole 1.2.1 saves its best-model
# checkpoint with the Config object and other non-tensor state, so reloading it for the test
# (Trainer.evaluate(load_best_model=True)) fails. The checkpoint is our own file, written a
# few seconds earlier by this process: load it the way torch < 2.6 did.
torch.load = functools.partial(torch.load, weights_only=False)

import recbole  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import get_model, init_logger, init_seed  # noqa: E402

SEED = 2020


def recbole_config(
    model: str, data_path: str, epochs: int, work: Path, seed: int = SEED, stopping_step: int = 3
) -> dict:
    """The settings of every run; everything else is RecBole's default."""
    cfg = {
        "data_path": data_path,
        "checkpoint_dir": str(work / "saved"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        # Data are prepared (and filtered) by bench/_loo_data.py: no filtering here.
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
        "val_interval": None,
        "rm_dup_inter": None,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "MAX_ITEM_LIST_LENGTH": 50,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "mode": "full",
            "group_by": "user",
        },
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "train_batch_size": 256,
        "eval_batch_size": 4096,
        "epochs": epochs,
        "stopping_step": stopping_step,
        "learning_rate": 0.001,
        "seed": seed,
        "reproducibility": True,
        "use_gpu": False,
        "gpu_id": "",
        "show_progress": False,
        "log_wandb": False,
    }
    if model == "GRU4Rec":
        cfg |= {"embedding_size": 64, "hidden_size": 64}
    else:
        cfg |= {"hidden_size": 64}
    return cfg


class TimedTrainer(Trainer):
    """RecBole's Trainer, recording per-epoch times and scores and when the best one came."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.epoch_log: list[dict] = []
        self.best_epoch: int | None = None
        self.time_to_best_s: float | None = None
        self.fit_start: float | None = None

    def fit(self, *args, **kwargs):
        self.fit_start = time.perf_counter()
        return super().fit(*args, **kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        total = sum(loss) if isinstance(loss, tuple) else loss
        self.epoch_log.append(
            {
                "epoch": epoch_idx + 1,
                "train_s": round(time.perf_counter() - start, 3),
                "train_loss": float(total),
            }
        )
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        start = time.perf_counter()
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.epoch_log[-1] |= {
            "valid_s": round(time.perf_counter() - start, 3),
            "valid_ndcg@10": float(result["ndcg@10"]),
            "valid_hr@10": float(result["hit@10"]),
            "valid_mrr@10": float(result["mrr@10"]),
            "elapsed_s": round(time.perf_counter() - self.fit_start, 3),
        }
        return score, result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        # Called exactly when validation NDCG@10 reaches a new best (RecBole keeps the later
        # epoch on a tie): this is the checkpoint the test metrics come from.
        self.best_epoch = epoch + 1
        self.time_to_best_s = round(time.perf_counter() - self.fit_start, 3)
        return super()._save_checkpoint(epoch, verbose=verbose, **kwargs)


def _ranking(rank: np.ndarray, k: int = 10) -> dict:
    """HR, NDCG and MRR at `k` of 1-based ranks."""
    inside = rank <= k
    return {
        f"hr@{k}": float(inside.mean()),
        f"ndcg@{k}": float(np.where(inside, 1 / np.log2(rank + 1), 0).mean()),
        f"mrr@{k}": float(np.where(inside, 1 / rank, 0).mean()),
        "users": int(rank.size),
    }


def masked_test(model, test_data, data, inter_file: Path) -> dict:
    """Test HR/NDCG/MRR@10 of `model` unmasked and with the user's seen items masked.

    See the module docstring for the three rankings. The history is every row of the
    user in the atomic file but RecBole's test row, so it is the whole history, not the
    model's 50-item window. RecBole's test row is its own (float32 timestamps merge
    seconds at 1e9, and its sort does not keep the file order of ties, so for a few
    users it is not the file's last row: counted in ``test_row_not_last``).
    """
    inter = pd.read_csv(inter_file, sep="\t", dtype=str)
    inter.columns = [c.split(":")[0] for c in inter.columns]
    uid = data.token2id("user_id", inter["user_id"].to_numpy())
    iid = data.token2id("item_id", inter["item_id"].to_numpy())
    last = np.r_[uid[1:] != uid[:-1], True]  # rows are grouped by user, in time order
    count = torch.zeros(data.user_num, data.item_num, dtype=torch.int32)
    count.index_put_(
        (torch.as_tensor(uid), torch.as_tensor(iid)),
        torch.tensor(1, dtype=torch.int32),
        accumulate=True,
    )
    file_last = np.zeros(data.user_num, dtype=np.int64)
    file_last[uid[last]] = iid[last]
    ranks: dict[str, list[np.ndarray]] = {"unmasked": [], "masked": [], "masked_target_kept": []}
    new_target, not_last = [], 0
    model.eval()
    with torch.no_grad():
        for interaction, _, positive_u, positive_i in test_data:
            scores = model.full_sort_predict(interaction).view(-1, data.item_num).float()
            scores[:, 0] = -torch.inf  # the padding item
            users = interaction["user_id"].long()
            target = torch.full((scores.shape[0],), -1, dtype=torch.long)
            target[positive_u] = positive_i
            if (target < 0).any():
                raise AssertionError("a test user without a RecBole test target")
            not_last += int((file_last[users.numpy()] != target.numpy()).sum())
            rows = torch.arange(scores.shape[0])
            own = torch.nn.functional.one_hot(target, data.item_num).bool()
            hist = (count[users] - own.int()) > 0  # the user's rows but the test row
            was_seen = hist[rows, target]
            new_target.append((~was_seen).numpy())
            for name, mask in (
                ("unmasked", torch.zeros_like(hist)),
                ("masked", hist),
                ("masked_target_kept", hist & ~own),
            ):
                s = scores.masked_fill(mask, -torch.inf)
                own_score = s[rows, target]
                # ties against the model; a masked target (-inf) ranks after every item
                rank = (s >= own_score[:, None]).sum(1)
                rank = torch.where(torch.isinf(own_score), data.item_num, rank)
                ranks[name].append(rank.numpy())
    new = np.concatenate(new_target)
    out = {"share_target_in_history": float(1 - new.mean()), "test_row_not_last": not_last}
    for name, parts in ranks.items():
        rank = np.concatenate(parts)
        out[name] = _ranking(rank) | {"new_target": _ranking(rank[new])}
    return out


def run(
    dataset: str,
    model_name: str,
    data_path: str,
    epochs: int,
    work: Path,
    threads: int,
    seed: int = SEED,
    stopping_step: int = 3,
) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # RecBole writes ./log and ./log_tensorboard into the working directory
    torch.set_num_threads(threads)
    config = Config(
        model=model_name,
        dataset=dataset,
        config_dict=recbole_config(model_name, data_path, epochs, work, seed, stopping_step),
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    t0 = time.perf_counter()
    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    data_s = time.perf_counter() - t0
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = TimedTrainer(config, model)
    t0 = time.perf_counter()
    best_valid_score, best_valid = trainer.fit(
        train_data, valid_data, saved=True, show_progress=False
    )
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    test_s = time.perf_counter() - t0
    masked = masked_test(
        trainer.model, test_data, data, Path(data_path) / dataset / f"{dataset}.inter"
    )
    epochs_run = len(trainer.epoch_log)
    stopped_early = epochs_run < epochs
    train_times = [e["train_s"] for e in trainer.epoch_log]
    return {
        "dataset": dataset,
        "model": model_name,
        "seed": seed,
        "n_users": int(data.user_num - 1),
        "n_items": int(data.item_num - 1),
        "n_interactions": int(data.inter_num),
        "n_train_sequences": len(train_data._dataset),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "epoch_cap": epochs,
        "epochs_run": epochs_run,
        "stopped_early": stopped_early,
        "capped": not stopped_early,
        "best_epoch": trainer.best_epoch,
        "train_s_per_epoch": round(float(np.mean(train_times)), 3),
        "time_to_best_s": trainer.time_to_best_s,
        "time_to_best_incl_data_s": round(trainer.time_to_best_s + data_s, 3),
        "data_prep_s": round(data_s, 3),
        "fit_s": round(fit_s, 3),
        "test_eval_s": round(test_s, 3),
        "total_s": round(time.perf_counter() - PROCESS_START, 3),
        "best_valid_ndcg@10": float(best_valid_score),
        "best_valid": {k: float(v) for k, v in best_valid.items()},
        "test": {
            "hr@10": float(test["hit@10"]),
            "ndcg@10": float(test["ndcg@10"]),
            "mrr@10": float(test["mrr@10"]),
        },
        "test_masking": masked,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "epochs": trainer.epoch_log,
        "settings": recbole_config(model_name, data_path, epochs, work, seed, stopping_step)
        | {
            k: config[k]
            for k in (
                "embedding_size",
                "hidden_size",
                "num_layers",
                "n_layers",
                "n_heads",
                "inner_size",
                "dropout_prob",
                "hidden_dropout_prob",
                "attn_dropout_prob",
                "metric_decimal_place",
            )
            if config[k] is not None
        },
        "versions": {
            "recbole": recbole.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True, choices=["GRU4Rec", "SASRec"])
    parser.add_argument("--data-path", required=True, help="folder holding <dataset>/")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--epochs", type=int, default=50, help="epoch cap (default 50)")
    parser.add_argument("--work", help="working folder for logs and checkpoints")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch CPU threads (default: all cores of this process)",
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    parser.add_argument(
        "--stopping-step",
        type=int,
        default=3,
        help="RecBole stopping_step: evaluations without a new best before stopping (default 3)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    data_path = str(Path(args.data_path).resolve()) + os.sep
    work = Path(args.work).resolve() if args.work else out.parent / f"work-{out.stem}"
    result = run(
        args.dataset,
        args.model,
        data_path,
        args.epochs,
        work,
        args.threads,
        args.seed,
        args.stopping_step,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    t = result["test"]
    print(
        f"{args.dataset} {args.model}: best epoch {result['best_epoch']}/{result['epochs_run']},"
        f" test HR@10 {t['hr@10']:.4f} NDCG@10 {t['ndcg@10']:.4f} MRR@10 {t['mrr@10']:.4f}"
        f" -> {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
