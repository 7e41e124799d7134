"""The multi-task model: FaceNet features shared by three heads (age, race, gender), per-group learning rates.

Each head is, as in the seed report, a 128-unit layer (linear by default) then a softmax over the task's
classes; the loss is the weighted sum of the three sparse cross-entropies. Learning rates per group come
from GroupedAdam: the age head trains at the base rate, the race and gender heads and the backbone at
rates scaled by params (the report: 1/10 and 1/100). Everything here is backend-neutral Keras.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from argml.core.labels import TASKS, AgeMode


def build_heads(input_dim: int, mode: AgeMode, hidden_units: int = 128, activation: str = "linear",
                dropout: float = 0.0) -> keras.Model:
    """features [B, input_dim] -> {"age", "race", "gender"}: class probabilities [B, n_classes]."""
    features = keras.Input((input_dim,), name="features")
    outputs = {}
    for task, names in mode.task_classes().items():
        x = layers.Dropout(dropout, name=f"{task}_dropout")(features) if dropout else features
        x = layers.Dense(hidden_units, activation=activation, name=f"{task}_hidden")(x)
        outputs[task] = layers.Dense(len(names), activation="softmax", name=task)(x)
    return keras.Model(features, outputs, name="heads")


def variable_group(path: str) -> str:
    """'age', 'race' or 'gender' for a head's variables (layer names start with the task), else 'backbone'."""
    task = path.split("/")[0].split("_")[0]
    return task if task in TASKS else "backbone"


@keras.saving.register_keras_serializable(package="argml")
class GroupedAdam(keras.optimizers.Adam):
    """Adam with a learning-rate factor per variable group (see `variable_group`).

    Scaling gradients would not scale Adam's steps (it normalises them), so the factor multiplies the
    learning rate inside each variable's update: the same as one Adam per group.
    """

    def __init__(self, lr_factors: dict[str, float], **kwargs):
        super().__init__(**kwargs)
        missing = {"backbone", *TASKS} - set(lr_factors)
        if missing:
            raise ValueError(f"lr_factors lacks {sorted(missing)}")
        self.lr_factors = dict(lr_factors)
        self._factors: list[float] = []

    def build(self, var_list):
        super().build(var_list)
        self._factors = [self.lr_factors[variable_group(variable.path)] for variable in var_list]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate * factor)

    def get_config(self):
        return {**super().get_config(), "lr_factors": self.lr_factors}


@keras.saving.register_keras_serializable(package="argml")
class AgeLoss(keras.losses.Loss):
    """Cross-entropy of the age head against the target distribution in y_true[:, :C] (one-hot or smoothed,
    see argml.age), plus `l1_weight` x |expected age - true age| in years, the true age being y_true[:, C]."""

    def __init__(self, age_values, l1_weight: float = 0.0, name: str = "age_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.age_values = [float(value) for value in age_values]
        self.l1_weight = float(l1_weight)

    def call(self, y_true, y_pred):
        classes = len(self.age_values)
        loss = keras.losses.categorical_crossentropy(y_true[:, :classes], y_pred)
        if self.l1_weight:
            expected = ops.sum(y_pred * ops.convert_to_tensor(self.age_values, y_pred.dtype), axis=-1)
            loss = loss + self.l1_weight * ops.abs(expected - y_true[:, classes])
        return loss

    def get_config(self):
        return {**super().get_config(), "age_values": self.age_values, "l1_weight": self.l1_weight}


def target_accuracy(y_true, y_pred):
    """Arg-max agreement with the target distribution (extra target columns, e.g. the age in years, ignored)."""
    classes = ops.shape(y_pred)[-1]
    return ops.cast(ops.argmax(y_true[:, :classes], axis=-1) == ops.argmax(y_pred, axis=-1), "float32")


def compile_model(model: keras.Model, learning_rate, lr_factors: dict[str, float], loss_weights: dict[str, float],
                  age_values, age_l1: float = 0.0, label_smoothing: float = 0.0, steps_per_execution: int = 1) -> None:
    """Targets (see argml.model.train.training_targets): race and gender one-hot, age a distribution then years.
    `steps_per_execution`: training steps per call into TensorFlow (the same steps; fewer Python round trips)."""
    losses = {task: keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
              for task in TASKS if task != "age"}
    model.compile(
        optimizer=GroupedAdam(lr_factors, learning_rate=learning_rate),
        loss={**losses, "age": AgeLoss(age_values, age_l1)},
        loss_weights=dict(loss_weights),
        metrics={task: [keras.metrics.MeanMetricWrapper(target_accuracy, name="accuracy")] for task in TASKS},
        steps_per_execution=steps_per_execution,
    )
