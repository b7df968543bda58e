from appimg.cli import run

run()
