"""Data: datasets, loaders, padding/bucketing collation, tokenizers and real corpora read
offline."""

from minitl.data.corpora import (
                                 ImageClassificationData,
                                 TextClassificationData,
                                 list_datasets,
                                 load_dataset,
                                 read_hutto,
                                 read_idx,
                                 read_idx_dir,
                                 read_movie_dialog,
                                 read_sms_spam,
                                 read_trec,
                                 stratified_sample,
                                 stratified_split,
)
from minitl.data.dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from minitl.data.loader import (
                                 BatchSampler,
                                 DataLoader,
                                 LengthBucketSampler,
                                 RandomSampler,
                                 Sampler,
                                 SequentialSampler,
                                 default_collate,
                                 pad_collate,
)
from minitl.data.tokenizers import (
                                 BasicTokenizer,
                                 BPETokenizer,
                                 ByteBPETokenizer,
                                 CharTokenizer,
                                 WordPieceTokenizer,
)

__all__ = [
    "BPETokenizer", "BasicTokenizer", "BatchSampler", "ByteBPETokenizer", "CharTokenizer",
    "ConcatDataset",
    "DataLoader", "Dataset", "ImageClassificationData", "LengthBucketSampler", "RandomSampler",
    "Sampler", "SequentialSampler", "Subset", "TensorDataset", "TextClassificationData",
    "WordPieceTokenizer", "default_collate", "list_datasets", "load_dataset", "pad_collate",
    "random_split", "read_hutto", "read_idx", "read_idx_dir", "read_movie_dialog",
    "read_sms_spam", "read_trec", "stratified_sample", "stratified_split",
]
