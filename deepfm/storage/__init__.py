"""Where the project reads and writes.

location  `Location`: a file or directory on any file system pyarrow reaches (local, S3, HDFS, GCS)
files     `Files`: the operations on files named by string that the stage contracts and the
          commit protocol are written against; `ArrowFiles` serves them through pyarrow
hadoop    `HadoopFiles`: the same through Hadoop's FileSystem, for the Spark stages
lease     one job at a time per output
commit    the one protocol that commits an output directory whole, and its ownership marker
"""
