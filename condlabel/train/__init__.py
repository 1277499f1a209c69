"""Conditional finetuning on tagged shards (Ray Train) and tag-adherence evaluation."""
