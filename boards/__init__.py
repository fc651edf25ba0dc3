"""lowbit.boards"""
