"""From raw values to model inputs, and the contract that carries them from preprocess to the model.

feature_map        the fields, their transforms and vocabularies: what preprocess fits and the model reads
transforms         the numeric transforms' registry (log buckets, standardization)
parse              raw text lines to typed, validated columns (Arrow)
encode             typed columns to model inputs, without Spark (Arrow): score, the pyfunc, readers' checks
spark_hash         Spark's xxhash64, so that hashed fields encode alike in Spark SQL and Arrow
vocabulary         the vocabulary's training counts per embedding row
preprocess_output  the preprocess output directory: its manifest and files, read and written only there
"""
