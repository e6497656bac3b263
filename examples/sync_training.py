"""A synchronous training loop that reports its progress and publishes its model's metrics.

Plain scikit-learn, no asyncio in sight: ``mlops_async.sync`` runs the bus clients
on a thread of its own and every call here simply blocks until it is done.

    python examples/sync_training.py --url redis://localhost:6379/0 --run run-42
    python examples/sync_training.py --demo        # in-memory bus, prints what was sent

Per epoch: a PROGRESS status on ``training.status`` (percent, loss, accuracy) and a
``ModelMetrics`` record on ``training.metrics``; at the end COMPLETE with the final
accuracy (or FAILURE with the error, if training raises; Ctrl-C included).
"""

from __future__ import annotations

import argparse

import msgspec
import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from mlops_async.sync import Consumer, Producer, Task, task


class ModelMetrics(msgspec.Struct, frozen=True):
    run: str
    epoch: int
    loss: float
    accuracy: float


# --8<-- [start:train]
def train(url: str, run: str, epochs: int) -> float:
    """Train for ``epochs`` passes, reporting each; returns the held-out accuracy."""
    x, y = make_classification(n_samples=4000, n_features=20, n_informative=8, random_state=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    model = SGDClassifier(loss="log_loss", random_state=0)
    classes = np.unique(y)
    accuracy = 0.0
    with Producer(url, topic="training.metrics", schema=ModelMetrics) as metrics, \
            metrics_task(url, run) as status:
        for epoch in range(1, epochs + 1):
            model.partial_fit(x_train, y_train, classes=classes)
            loss = float(log_loss(y_test, model.predict_proba(x_test)))
            accuracy = float(accuracy_score(y_test, model.predict(x_test)))
            metrics.send(ModelMetrics(run, epoch, round(loss, 4), round(accuracy, 4)))
            status.progress(100 * epoch / epochs, f"epoch {epoch}/{epochs}",
                            loss=round(loss, 4), accuracy=round(accuracy, 4))
        status.result(accuracy=round(accuracy, 4), epochs=epochs)
    return accuracy
# --8<-- [end:train]


def metrics_task(url: str, run: str) -> Task:
    """START now, PROGRESS per epoch, COMPLETE or FAILURE when the block ends."""
    return task(run, url, topic="training.status", creator="sync_training", stage="TRAIN")


def show(url: str) -> None:
    """Print what the run sent (the demo reads its own in-memory bus back)."""
    with Consumer(url, topic="training.metrics", schema=ModelMetrics,
                  auto_offset_reset="earliest") as metrics:
        for m in metrics.get_messages(timeout=1.0):
            print(f"metrics epoch={m.epoch} loss={m.loss} accuracy={m.accuracy}")
    with Consumer(url, topic="training.status", auto_offset_reset="earliest") as statuses:
        for s in statuses.get_messages(timeout=1.0):
            print(f"status {s.msg_type.name} {s.user_message} {s.additional_arguments}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://training")
    parser.add_argument("--run", default="run-1")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--demo", action="store_true", help="print what was sent")
    args = parser.parse_args()
    accuracy = train(args.url, args.run, args.epochs)
    print(f"trained {args.run}: accuracy {accuracy:.3f}")
    if args.demo:
        show(args.url)


if __name__ == "__main__":
    main()
