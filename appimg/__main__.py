from appimg.cli import console_main

console_main()
