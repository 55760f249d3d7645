"""The optional Hugging Face ``datasets`` dependency, imported only when a data set is loaded by name."""

from __future__ import annotations

from typing import Any

__all__ = ["load_hf_dataset"]


def load_hf_dataset(name: str, config: str | None = None, data_files: Any = None, **kwargs: Any) -> Any:
    """``datasets.load_dataset(name, config, data_files=...)`` with a clear error when ``datasets`` is missing."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"Loading the Hugging Face data set {name!r} needs the 'datasets' package: pip install datasets "
            "(and a network for hub data sets). Offline, use the file/folder data modules instead "
            "(TextFileDataModule, ImageFolderDataModule)."
        ) from err
    if data_files is not None:
        kwargs["data_files"] = data_files
    return datasets.load_dataset(name, config, **kwargs)
